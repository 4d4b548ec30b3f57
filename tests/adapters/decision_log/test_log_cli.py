"""`keyart log` sub-app on SQLite (CliRunner), plus Cassandra migrate on a fake session."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pyarrow.parquet as pq
import pytest
import typer
from adapters.decision_log.dlog_helpers import make_impression, make_outcome
from typer.testing import CliRunner

from keyart.adapters.decision_log import cassandra as cassandra_store
from keyart.adapters.decision_log.sqlite import SqliteLogStore
from keyart.app.cli.log import log_app, parse_when
from keyart.domain import OutcomeKind

app = typer.Typer()
app.add_typer(log_app, name="log")
runner = CliRunner()
NOW = datetime.now(UTC).replace(microsecond=0)


def run(*args: str, env: dict[str, str] | None = None):
    return runner.invoke(app, ["log", *args], env=env)


@pytest.fixture
def env(tmp_path, monkeypatch) -> dict[str, str]:
    for k in ("KEYART_LOG_BACKEND", "KEYART_CASSANDRA_CONTACT_POINTS"):
        monkeypatch.delenv(k, raising=False)
    return {"KEYART_DATA_DIR": str(tmp_path / "data")}


@pytest.fixture
def filled(env, tmp_path) -> dict[str, str]:
    store = SqliteLogStore(tmp_path / "data" / "log" / "decisions.sqlite")
    imps = [make_impression(i, at=NOW - timedelta(hours=2, seconds=-i)) for i in range(30)]
    imps.append(make_impression(99, at=NOW - timedelta(days=10), policy="uniform"))
    store.write_impressions(imps)
    store.write_outcomes([make_outcome("dec-000003", OutcomeKind.PLAY_STARTED, 20.0,
                                       at=NOW - timedelta(hours=1))])
    store.close()
    return env


@pytest.mark.parametrize("cmd", [[], ["migrate"], ["tail"], ["export"], ["stats"]])
def test_every_command_has_help(cmd) -> None:
    r = run(*cmd, "--help")
    assert r.exit_code == 0 and "Usage" in r.output


def test_migrate_sqlite_is_idempotent(env, tmp_path) -> None:
    for _ in range(2):
        r = run("migrate", "--json", env=env)
        assert r.exit_code == 0, r.output
        out = json.loads(r.stdout)
        assert out["backend"] == "sqlite" and out["journal_mode"] == "wal"
    assert (tmp_path / "data" / "log" / "decisions.sqlite").is_file()


def test_tail(filled) -> None:
    r = run("tail", "-n", "5", "--json", env=filled)
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)["impressions"]
    assert [x["decision_id"] for x in rows] == [f"dec-{i:06d}" for i in range(25, 30)]
    human = run("tail", "-n", "3", env=filled)
    assert human.exit_code == 0 and "epsilon_greedy" in human.stdout
    assert len(human.stdout.splitlines()) == 4


def test_export_relative_and_iso(filled, tmp_path) -> None:
    out = tmp_path / "x" / "log.parquet"
    r = run("export", "--since", "1d", "--format", "parquet", "--out", str(out), "--json", env=filled)
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert res["impressions"] == 30 and res["played"] == 1
    table = pq.read_table(out)
    assert table.num_rows == 30
    since = (NOW - timedelta(days=11)).isoformat()
    until = (NOW - timedelta(days=9)).strftime("%Y-%m-%dT%H:%M:%SZ")
    r = run("export", "--since", since, "--until", until, "--out", str(out), "--json", env=filled)
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["impressions"] == 1


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--since", "last tuesday"], "--since: cannot read 'last tuesday'"),
        (["--since", "1d", "--until", "2d"], "must be before --until"),
        (["--since", "2024-13-45"], "--since: cannot read"),
        (["--since", "1d", "--format", "csv"], "--format"),
    ],
)
def test_export_bad_input_is_one_line_exit_2(filled, tmp_path, args, needle) -> None:
    r = run("export", *args, "--out", str(tmp_path / "o.parquet"), env=filled)
    assert r.exit_code == 2
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0]
    assert "Traceback" not in r.output


def test_stats(filled) -> None:
    r = run("stats", "--json", env=filled)
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    assert s["window"]["impressions"] == 30 and s["window"]["outcomes"] == 1
    assert s["window"]["outcomes_by_kind"] == {"PLAY_STARTED": 1}
    assert s["totals"]["impressions"] == 31 and s["totals"]["outcomes"] == 1
    assert s["spool"]["live_writers"] == 0
    assert run("stats", env=filled).exit_code == 0


def test_bad_setting_is_exit_2(env) -> None:
    r = run("stats", env=env | {"KEYART_LOG_BACKEND": "mongo"})
    assert r.exit_code == 2 and r.stderr.startswith("error: invalid KEYART_* setting")


def test_unreachable_cassandra_is_exit_2(env) -> None:
    cenv = env | {"KEYART_LOG_BACKEND": "cassandra", "KEYART_CASSANDRA_CONTACT_POINTS": "127.0.0.1",
                  "KEYART_CASSANDRA_PORT": "1"}
    for cmd in (["migrate"], ["tail"], ["stats"]):
        r = run(*cmd, env=cenv)
        assert r.exit_code == 2, r.output
        assert r.stderr.startswith("error: ") and "127.0.0.1:1" in r.stderr
        assert "Traceback" not in r.output


class FakeSession:
    def __init__(self, existing: dict | None = None) -> None:
        self.statements: list[str] = []
        self.existing = existing
        self.shut = False

    def execute(self, stmt, params=None):
        if "system_schema.keyspaces" in stmt:
            return [{"replication": self.existing}] if self.existing else []
        self.statements.append(stmt)
        return []

    def shutdown(self) -> None:
        self.shut = True


def test_migrate_cassandra_options(env, monkeypatch) -> None:
    session = FakeSession()
    monkeypatch.setattr(cassandra_store, "connect_session", lambda s: session)
    cenv = env | {"KEYART_LOG_BACKEND": "cassandra", "KEYART_CASSANDRA_CONTACT_POINTS": "db1"}
    r = run("migrate", "--dc", "dc1", "--dc", "dc2", "--replication-factor", "3",
            "--ttl-days", "90", "--json", env=cenv)
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["replication"] == "{'class': 'NetworkTopologyStrategy', 'dc1': 3, 'dc2': 3}"
    assert out["ttl_seconds"] == 90 * 86400 and not out["keyspace_existed"]
    assert session.shut and session.statements[0].startswith("CREATE KEYSPACE IF NOT EXISTS keyart")
    creates = [s for s in session.statements if s.startswith("CREATE")]
    assert len(creates) == 7 and all("IF NOT EXISTS" in s for s in creates)
    # The rest add columns introduced since (to tables created before).
    assert all(" ADD " in s for s in session.statements if s not in creates)
    assert out["statements"] == len(session.statements) == 25
    assert any("default_time_to_live = 7776000" in s for s in session.statements)

    # Again on an existing keyspace with another replication: applied (no-op), reported.
    session2 = FakeSession({"class": "org.apache.cassandra.locator.SimpleStrategy",
                            "replication_factor": "1"})
    monkeypatch.setattr(cassandra_store, "connect_session", lambda s: session2)
    r = run("migrate", "--json", env=cenv)
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["keyspace_existed"] and out["replication"].startswith("{'class': 'SimpleStrategy'")
    assert not any("exists with replication" in w for w in out["warnings"])  # same: RF 1, no DC
    r = run("migrate", "--dc", "dc1", "--json", env=cenv)
    assert any("exists with replication" in w for w in json.loads(r.stdout)["warnings"])


def test_parse_when() -> None:
    now = datetime(2024, 5, 8, tzinfo=UTC)
    assert parse_when("7d", "--since", now) == datetime(2024, 5, 1, tzinfo=UTC)
    assert parse_when("24h", "--since", now) == datetime(2024, 5, 7, tzinfo=UTC)
    assert parse_when("2024-05-01", "--since", now) == datetime(2024, 5, 1, tzinfo=UTC)
    assert parse_when("2024-05-01T02:00:00+02:00", "x", now) == datetime(2024, 5, 1, tzinfo=UTC)
    assert parse_when("now", "x", now) == now
