"""The decision log on a node with PasswordAuthenticator + CassandraAuthorizer and client TLS
(the session's ``cassandra_secure_node``: superuser cassandra/cassandra, a throw-away test CA).

Settings reach the store as in production: KEYART_CASSANDRA_USERNAME / _PASSWORD /
_TLS_CA_FILE (build_cluster: PlainTextAuthProvider and an ssl_context verifying the CA).
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime, timedelta

import certifi
import pytest
import typer
from adapters.decision_log.dlog_helpers import T0, make_impression, make_outcome
from live_cassandra import live_keyspace
from typer.testing import CliRunner

from keyart.adapters.decision_log.cassandra import CassandraLogStore, connect_session
from keyart.adapters.decision_log.store import LogStoreUnavailable, OutcomeWriteResult
from keyart.app.cli.log import log_app

pytestmark = pytest.mark.cassandra

app = typer.Typer()
app.add_typer(log_app, name="log")
runner = CliRunner()


@pytest.fixture(scope="module")
def secure_ks(cassandra_secure_node):
    with live_keyspace(cassandra_secure_node) as (session, keyspace):
        yield session, keyspace


def ping_error(settings) -> str:
    store = CassandraLogStore.from_settings(settings)
    t0 = time.monotonic()
    try:
        with pytest.raises(LogStoreUnavailable) as info:
            store.ping()
    finally:
        store.close()
    assert time.monotonic() - t0 < 10  # refused at once, not a timeout
    return str(info.value)


def test_right_password_over_tls(cassandra_secure_node, tmp_path) -> None:
    """`keyart log migrate` and the store log in and talk TLS; the server sees it so."""
    node = cassandra_secure_node
    keyspace = f"keyart_sec_{uuid.uuid4().hex[:8]}"
    env = node.env(KEYART_CASSANDRA_KEYSPACE=keyspace, KEYART_DATA_DIR=str(tmp_path / "data"))
    for existed in (False, True):
        r = runner.invoke(app, ["log", "migrate", "--json"], env=env)
        assert r.exit_code == 0, r.output
        assert json.loads(r.stdout)["keyspace_existed"] is existed

    now = datetime.now(UTC)
    store = CassandraLogStore.from_settings(node.settings(keyspace))
    try:
        store.write_impressions([make_impression(i, at=now - timedelta(seconds=10 - i)) for i in range(10)])
        assert store.write_outcomes([make_outcome("dec-000003", at=now)]) == OutcomeWriteResult(1, 0, 0)
        assert len(list(store.scan_impressions(now - timedelta(minutes=1), now))) == 10
        session, _ = store._ready()
        assert session.cluster.ssl_context is not None
        clients = list(session.execute("SELECT username, ssl_enabled FROM system_views.clients"))
        assert clients and all(c.ssl_enabled and c.username == "cassandra" for c in clients)
    finally:
        store.close()

    r = runner.invoke(app, ["log", "tail", "-n", "3", "--json"], env=env)
    assert r.exit_code == 0, r.output
    assert [i["decision_id"] for i in json.loads(r.stdout)["impressions"]] == ["dec-000007", "dec-000008", "dec-000009"]


def test_wrong_password_is_a_clear_error(cassandra_secure_node, secure_ks, tmp_path) -> None:
    node, (_, keyspace) = cassandra_secure_node, secure_ks
    msg = ping_error(node.settings(keyspace, cassandra_password="wrong"))
    assert "Bad credentials" in msg and "username cassandra and/or password are incorrect" in msg
    env = node.env(KEYART_CASSANDRA_KEYSPACE=keyspace, KEYART_CASSANDRA_PASSWORD="wrong",
                   KEYART_DATA_DIR=str(tmp_path / "data"))  # fmt: skip
    r = runner.invoke(app, ["log", "stats"], env=env)
    assert r.exit_code == 2, r.output
    assert r.stderr.startswith("error: decision log (cassandra at ") and "password are incorrect" in r.stderr
    assert "Traceback" not in r.output


def test_no_credentials_on_an_auth_node(cassandra_secure_node, secure_ks) -> None:
    _, keyspace = secure_ks
    msg = ping_error(cassandra_secure_node.settings(keyspace, cassandra_username="", cassandra_password=""))
    assert "Remote end requires authentication" in msg


def test_least_privilege_role_writes_but_cannot_migrate(cassandra_secure_node, secure_ks, tmp_path) -> None:
    """A role with SELECT + MODIFY on the keyspace only (what a serving process needs) logs and
    reads; a schema change needs more, and migrate says so in one line."""
    node, (session, keyspace) = cassandra_secure_node, secure_ks
    role = f"writer_{uuid.uuid4().hex[:6]}"
    session.execute(f"CREATE ROLE {role} WITH PASSWORD = 'pw-{role}' AND LOGIN = true")
    session.execute(f"GRANT SELECT ON KEYSPACE {keyspace} TO {role}")
    session.execute(f"GRANT MODIFY ON KEYSPACE {keyspace} TO {role}")
    settings = node.settings(keyspace, cassandra_username=role, cassandra_password=f"pw-{role}")
    store = CassandraLogStore.from_settings(settings)
    try:
        store.write_impressions([make_impression(500)])
        assert [i.decision_id for i in store.scan_impressions(T0, T0 + timedelta(hours=1))] == ["dec-000500"]
    finally:
        store.close()
    env = node.env(KEYART_CASSANDRA_KEYSPACE=keyspace, KEYART_CASSANDRA_USERNAME=role,
                   KEYART_CASSANDRA_PASSWORD=f"pw-{role}", KEYART_DATA_DIR=str(tmp_path / "data"))  # fmt: skip
    r = runner.invoke(app, ["log", "migrate"], env=env)
    assert r.exit_code == 2, r.output
    assert r.stderr.startswith("error: schema migration failed") and "Unauthorized" in r.stderr


def test_tls_is_required_and_the_ca_checked(cassandra_secure_node, secure_ks) -> None:
    node, (_, keyspace) = cassandra_secure_node, secure_ks
    plain = ping_error(node.settings(keyspace, cassandra_tls_ca_file=""))  # the node resets a cleartext client
    assert "Unable to connect to any servers" in plain
    other_ca = ping_error(node.settings(keyspace, cassandra_tls_ca_file=certifi.where()))  # public CAs only
    assert "CERTIFICATE_VERIFY_FAILED" in other_ca


def test_connect_session_raises_for_bad_credentials(cassandra_secure_node) -> None:
    """connect_session (used by `keyart log migrate`) shuts its Cluster down when login fails."""
    from cassandra.cluster import NoHostAvailable

    with pytest.raises(NoHostAvailable, match="Bad credentials"):
        connect_session(cassandra_secure_node.settings(cassandra_password="nope"))
