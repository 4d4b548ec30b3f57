"""`keyart log migrate|export|tail|stats` against a real Cassandra 5.0 node.

``migrate`` runs through the installed ``keyart`` console script (a subprocess, as an operator
runs it); the other commands through typer's CliRunner in this process. Settings reach the
CLI only as KEYART_* variables, exactly as in production.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import typer
from adapters.decision_log.dlog_helpers import T0, make_impression, make_outcome
from live_cassandra import live_keyspace
from typer.testing import CliRunner

from keyart.adapters.decision_log.cassandra import CassandraLogStore, connect_session, render_schema
from keyart.adapters.decision_log.records import shard_of
from keyart.app.cli.log import log_app
from keyart.domain import OutcomeKind

pytestmark = pytest.mark.cassandra

app = typer.Typer()
app.add_typer(log_app, name="log")
runner = CliRunner()
KEYART = Path(sys.executable).with_name("keyart")


def cli_env(node, keyspace: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    return node.env(KEYART_CASSANDRA_KEYSPACE=keyspace, KEYART_DATA_DIR=str(tmp_path / "data"), **extra)


def run(env: dict[str, str], *args: str):
    return runner.invoke(app, ["log", *args], env=env)


def keyart(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("KEYART_")}
    cmd = [str(KEYART)] if KEYART.exists() else [sys.executable, "-m", "keyart.app.cli.main"]
    return subprocess.run([*cmd, *args], env={**base, **env}, capture_output=True, text=True, timeout=120)


def table_ttls(session, keyspace: str) -> dict[str, int]:
    rows = session.execute(
        "SELECT table_name, default_time_to_live FROM system_schema.tables WHERE keyspace_name = %s", (keyspace,)
    )
    return {r.table_name: r.default_time_to_live for r in rows}


def test_keyart_log_migrate_twice(cassandra_node, tmp_path) -> None:
    with live_keyspace(cassandra_node, migrate=False) as (session, keyspace):
        env = cli_env(cassandra_node, keyspace, tmp_path)
        first = keyart(env, "log", "migrate", "--ttl-days", "7", "--json")
        assert first.returncode == 0, first.stderr
        r1 = json.loads(first.stdout)
        statements = len(render_schema(keyspace))  # every CREATE and ALTER of the schema file, once
        assert r1["backend"] == "cassandra" and r1["keyspace"] == keyspace and not r1["keyspace_existed"]
        assert r1["replication"] == "{'class': 'SimpleStrategy', 'replication_factor': 1}"
        assert r1["ttl_seconds"] == 7 * 86_400 and r1["statements"] == statements and r1["warnings"] == []
        assert table_ttls(session, keyspace) == dict.fromkeys(table_ttls(session, keyspace), 604_800)
        assert len(table_ttls(session, keyspace)) == 6

        second = keyart(env, "log", "migrate", "--ttl-days", "1")  # the human output, a new TTL asked
        assert second.returncode == 0, second.stderr
        assert f"cassandra keyspace {keyspace} already existed; {statements} statements applied" in second.stdout
        assert "keep their default_time_to_live" in second.stderr and "Traceback" not in second.stderr
        assert set(table_ttls(session, keyspace).values()) == {604_800}  # an existing table's TTL is not altered


def _in_shard(shard: int, n: int, prefix: str) -> list[str]:
    ids = (f"{prefix}-{i:05d}" for i in range(100_000))
    out = []
    for d in ids:
        if shard_of(d) == shard:
            out.append(d)
            if len(out) == n:
                return out
    raise AssertionError("not enough ids")


def test_export_by_time_range_pages_through_large_partitions(cassandra_node, tmp_path) -> None:
    """1,200 decisions in one (hour, shard) partition: more than the store's fetch_size (1000,
    what `keyart log export` uses), so the driver pages; every row in [since, until) once."""
    since, until = T0.replace(minute=0), T0.replace(minute=0) + timedelta(hours=1, minutes=30)  # 12:00 .. 13:30
    big = [make_impression(0, decision_id=d, at=since + timedelta(seconds=2 * k))
           for k, d in enumerate(_in_shard(5, 1200, "big"))]  # fmt: skip
    spread = [make_impression(i, at=since + timedelta(hours=1, seconds=10 * i)) for i in range(60)]  # 13:00 .. 13:09:50
    edges = [
        make_impression(900, at=since - timedelta(milliseconds=1)),  # just before --since: out
        make_impression(901, at=until),  # at --until: out (exclusive)
        make_impression(902, at=until - timedelta(milliseconds=1)),  # in
        make_impression(903, at=since + timedelta(days=1)),  # another day: out
    ]
    with live_keyspace(cassandra_node) as (session, keyspace):
        store = CassandraLogStore(session, keyspace=keyspace)
        store.write_impressions(big + spread + edges)
        env = cli_env(cassandra_node, keyspace, tmp_path)
        assert CassandraLogStore.from_settings(cassandra_node.settings(keyspace)).fetch_size == 1000
        out = tmp_path / "export.parquet"
        r = run(env, "export", "--since", since.isoformat(), "--until", until.isoformat(), "--out", str(out), "--json")
        assert r.exit_code == 0, r.output
        result = json.loads(r.stdout)
        assert result["impressions"] == 1200 + 60 + 1 and result["path"] == str(out)
        table = pq.read_table(out)
        want = sorted(big + spread + [edges[2]], key=lambda i: (i.decided_at, i.decision_id))
        assert table.column("decision_id").to_pylist() == [i.decision_id for i in want]
        assert table.column("decided_at").to_pylist()[0] == since
        assert table.column("features").to_pylist()[0] == np.frombuffer(big[0].features, "<f4").tolist()


def test_export_joins_outcomes_as_documented(cassandra_node, tmp_path) -> None:
    """Outcomes of [since, until + --outcome-window) aggregate onto their decisions."""
    since, until = T0, T0 + timedelta(hours=1)
    imps = [make_impression(i, at=T0 + timedelta(minutes=i)) for i in range(6)]
    m = timedelta(minutes=1)
    outcomes = [
        make_outcome("dec-000000", OutcomeKind.IMPRESSION_SEEN, at=T0 + 2 * m),
        make_outcome("dec-000000", OutcomeKind.PLAY_STARTED, at=T0 + 5 * m),
        make_outcome("dec-000000", OutcomeKind.PLAYBACK_PROGRESS, 12.0, at=T0 + 20 * m),
        make_outcome("dec-000000", OutcomeKind.PLAYBACK_PROGRESS, 12.0, at=T0 + 20 * m),  # a re-send
        make_outcome("dec-000001", OutcomeKind.IMPRESSION_SEEN, at=T0 + 3 * m),
        make_outcome("dec-000002", OutcomeKind.PLAY_STARTED, 1.5, at=until + 30 * m),  # in the window after until
        make_outcome("dec-000003", OutcomeKind.PLAY_STARTED, 4.0, at=until + 90 * m),  # past the window
        make_outcome("ghost", OutcomeKind.PLAY_STARTED, at=T0 + 9 * m),  # no such decision
    ]
    with live_keyspace(cassandra_node) as (session, keyspace):
        store = CassandraLogStore(session, keyspace=keyspace)
        store.write_impressions(imps)
        written = store.write_outcomes(outcomes)
        assert (written.written, written.duplicates, written.unknown_decision) == (7, 1, 1)
        out = tmp_path / "joined.parquet"
        env = cli_env(cassandra_node, keyspace, tmp_path)
        r = run(env, "export", "--since", since.isoformat(), "--until", until.isoformat(), "--out", str(out),
                "--outcome-window", "1h", "--json")  # fmt: skip
        assert r.exit_code == 0, r.output
        result = json.loads(r.stdout)
        assert result["impressions"] == 6 and result["played"] == 2 and result["seen"] == 2
        assert result["outcomes_scanned"] == 6 and result["outcomes_unmatched"] == 1  # 'ghost'
        rows = {row["decision_id"]: row for row in pq.read_table(out).to_pylist()}
        got = {d: (r["seen"], r["played"], r["max_minutes"], r["first_play_time"], r["n_outcomes"])
               for d, r in rows.items()}  # fmt: skip
        assert got == {
            "dec-000000": (True, True, 12.0, T0 + 5 * m, 3),
            "dec-000001": (True, False, 0.0, None, 1),
            "dec-000002": (False, True, 1.5, until + 30 * m, 1),
            "dec-000003": (False, False, 0.0, None, 0),
            "dec-000004": (False, False, 0.0, None, 0),
            "dec-000005": (False, False, 0.0, None, 0),
        }


def test_tail_and_stats(cassandra_node, tmp_path) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    imps = [
        make_impression(i, at=now - timedelta(minutes=100 - 3 * i), member=f"m{i % 4}",
                        policy="uniform" if i % 5 == 0 else "epsilon_greedy",
                        fallback_reason="deadline" if i == 7 else "")
        for i in range(30)
    ]  # fmt: skip
    kinds = [(1, OutcomeKind.IMPRESSION_SEEN), (2, OutcomeKind.PLAY_STARTED), (3, OutcomeKind.PLAY_STARTED)]
    outs = [make_outcome(imps[i].decision_id, kind, at=now - timedelta(minutes=10)) for i, kind in kinds]
    with live_keyspace(cassandra_node) as (session, keyspace):
        store = CassandraLogStore(session, keyspace=keyspace)
        store.write_impressions(imps)
        store.write_outcomes(outs)
        env = cli_env(cassandra_node, keyspace, tmp_path)

        r = run(env, "tail", "-n", "5", "--json")
        assert r.exit_code == 0, r.output
        tail = json.loads(r.stdout)
        assert tail["backend"] == "cassandra" and tail["location"].endswith(f":{cassandra_node.port}/{keyspace}")
        assert [i["decision_id"] for i in tail["impressions"]] == [i.decision_id for i in imps[-5:]]
        human = run(env, "tail", "-n", "3")
        assert human.exit_code == 0 and human.stdout.splitlines()[0].split()[:3] == ["decided_at", "member", "title"]
        assert len(human.stdout.splitlines()) == 4

        r = run(env, "stats", "--since", "3h", "--json")
        assert r.exit_code == 0, r.output
        stats = json.loads(r.stdout)
        w = stats["window"]
        assert (w["impressions"], w["members"], w["explored"], w["outcomes"]) == (30, 4, 15, 3)
        assert w["by_policy"] == {"epsilon_greedy": 24, "uniform": 6} and w["fallbacks"] == {"deadline": 1}
        assert w["outcomes_by_kind"] == {"IMPRESSION_SEEN": 1, "PLAY_STARTED": 2}
        assert stats["totals"] is None  # Cassandra: window counts only
        assert stats["spool"]["dirs"] == [] and stats["spool"]["pending_bytes"] == 0
        human = run(env, "stats", "--since", "30m")
        assert human.exit_code == 0, human.output
        assert f"decision log: cassandra at {cassandra_node.host}:{cassandra_node.port}/{keyspace}" in human.stdout
        assert "6 impressions" in human.stdout


@pytest.fixture(scope="module")
def migrated(cassandra_node):
    with live_keyspace(cassandra_node) as (_, keyspace):
        yield keyspace


def test_tail_of_a_log_without_recent_rows_looks_back_a_year_quickly(cassandra_node, migrated, tmp_path) -> None:
    """Three impressions 200 days old: tail widens its window to a year (8,760 hour buckets).
    One query per (bucket, shard) made that 70,080 queries and minutes; now a few hundred."""
    old = datetime.now(UTC).replace(microsecond=0) - timedelta(days=200)
    session = connect_session(cassandra_node.settings(migrated))
    try:
        CassandraLogStore(session, keyspace=migrated).write_impressions(
            [make_impression(i, at=old + timedelta(minutes=i)) for i in range(3)]
        )
    finally:
        session.cluster.shutdown()
    t0 = time.monotonic()
    r = run(cli_env(cassandra_node, migrated, tmp_path), "tail", "-n", "5", "--json")
    took = time.monotonic() - t0
    assert r.exit_code == 0, r.output
    assert [i["decision_id"] for i in json.loads(r.stdout)["impressions"]] == ["dec-000000", "dec-000001", "dec-000002"]
    cassandra_node.notes.append(f"`keyart log tail` over a year of empty hours: {took:.1f} s")
    assert took < 120


@pytest.mark.parametrize(
    ("level", "command", "message"),
    [
        ("THREE", "export", "Cannot achieve consistency level THREE"),
        ("SERIAL", "tail", "consistency level SERIAL is for lightweight transactions"),
    ],
)
def test_cli_reports_a_consistency_the_node_cannot_serve(cassandra_node, migrated, tmp_path, level, command,
                                                         message) -> None:  # fmt: skip
    """One `error: ...` line, exit 2: THREE from the node (Unavailable), SERIAL from the store."""
    env = cli_env(cassandra_node, migrated, tmp_path, KEYART_CASSANDRA_CONSISTENCY=level)
    args = ["--since", "1h", "--out", str(tmp_path / "x.parquet")] if command == "export" else []
    r = run(env, command, *args)
    assert r.exit_code == 2, r.output
    assert r.stderr.startswith("error: ") and message in r.stderr and "Traceback" not in r.output
