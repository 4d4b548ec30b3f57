"""CassandraLogStore against a fake driver session (no Cassandra on this machine).

The fake records every prepare / execute / execute_async call and keeps rows in
memory keyed by each table's primary key, so writes can be read back through the
store's own SELECTs. Timestamps are stored as Cassandra returns them: naive UTC,
millisecond precision.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import certifi
import pytest
from cassandra import ConsistencyLevel, WriteTimeout
from cassandra.cluster import NoHostAvailable
from cassandra.policies import DCAwareRoundRobinPolicy, TokenAwarePolicy
from decision_log.dlog_helpers import T0, make_impression, make_outcome

from keyart.decision_log.cassandra_store import (
    CassandraLogStore,
    build_cluster,
    migrate,
    render_schema,
)
from keyart.decision_log.store import LogStore, LogStoreUnavailable, OutcomeWriteResult
from keyart.domain import OutcomeKind
from keyart.settings import KeyartSettings

PRIMARY_KEYS = {
    "impressions_by_time": ("hour_bucket", "shard", "decided_at", "decision_id"),
    "impressions_by_decision": ("decision_id",),
    "impressions_by_member": ("member_id", "decided_at", "title_id", "decision_id"),
    "outcomes_by_decision": ("decision_id", "kind", "event_time", "outcome_key"),
    "outcomes_by_time": ("hour_bucket", "shard", "event_time", "outcome_key"),
    "unknown_outcomes": ("hour_bucket", "event_time", "decision_id", "outcome_key"),
}


def _cass_value(v: Any) -> Any:
    if isinstance(v, datetime):
        v = v.astimezone(UTC).replace(tzinfo=None)
        return v.replace(microsecond=v.microsecond // 1000 * 1000)
    return v


class FakePrepared:
    def __init__(self, query: str) -> None:
        self.query_string = query
        self.consistency_level: int | None = None
        self.is_idempotent = False
        self.fetch_size: int | None = None


class FakeFuture:
    def __init__(self, session: FakeSession, fn) -> None:
        self._session = session
        self._fn = fn
        session.pending += 1
        session.max_pending = max(session.max_pending, session.pending)

    def result(self) -> Any:
        self._session.pending -= 1
        return self._fn()


class FakeSession:
    def __init__(self) -> None:
        self.prepared: list[FakePrepared] = []
        self.executed: list[tuple[Any, Any]] = []  # (statement or CQL text, values)
        self.tables: dict[str, dict[tuple, dict[str, Any]]] = {t: {} for t in PRIMARY_KEYS}
        self.fail: BaseException | None = None
        self.fail_async: BaseException | None = None
        self.pending = 0
        self.max_pending = 0
        self.shutdown_called = False

    # driver API used by the store
    def prepare(self, query: str) -> FakePrepared:
        stmt = FakePrepared(query)
        self.prepared.append(stmt)
        return stmt

    def execute(self, stmt: Any, values: Any = None) -> Any:
        if self.fail is not None:
            raise self.fail
        self.executed.append((stmt, values))
        if isinstance(stmt, str):
            if "system.local" in stmt:
                return [SimpleNamespace(release_version="5.0.0")]
            return []
        return self._run(stmt, values)

    def execute_async(self, stmt: Any, values: Any = None) -> FakeFuture:
        if self.fail is not None:
            raise self.fail
        self.executed.append((stmt, values))
        if self.fail_async is not None:
            exc = self.fail_async

            def boom() -> Any:
                raise exc

            return FakeFuture(self, boom)
        rows = self._run(stmt, values)
        return FakeFuture(self, lambda: rows)

    def shutdown(self) -> None:
        self.shutdown_called = True

    # a tiny CQL interpreter for the store's own statements
    def _run(self, stmt: FakePrepared, values: Any) -> list[Any]:
        q = stmt.query_string
        assert q.count("?") == len(values), q
        m = re.match(r"INSERT INTO \w+\.(\w+) \(([^)]*)\)", q)
        if m:
            table, cols = m.group(1), [c.strip() for c in m.group(2).split(",")]
            row = {c: _cass_value(v) for c, v in zip(cols, values)}
            self.tables[table][tuple(row[k] for k in PRIMARY_KEYS[table])] = row
            return []
        m = re.match(r"SELECT (.*) FROM \w+\.(\w+) WHERE (.*?)( LIMIT \?)?$", q)
        assert m, q
        cols = [c.strip() for c in m.group(1).split(",")]
        table = m.group(2)
        conds = re.findall(r"(\w+) (=|>=|<) \?", m.group(3))
        vals = [_cass_value(v) for v in values]
        limit = vals.pop() if m.group(4) else None
        ops = {"=": lambda a, b: a == b, ">=": lambda a, b: a >= b, "<": lambda a, b: a < b}
        rows = [
            r
            for r in self.tables[table].values()
            if all(ops[op](r[c], v) for (c, op), v in zip(conds, vals))
        ]
        key = PRIMARY_KEYS[table]
        rows.sort(key=lambda r: tuple(r[k] for k in key))
        if table == "impressions_by_member":  # CLUSTERING ORDER BY (decided_at DESC, ...)
            rows.sort(key=lambda r: r["decided_at"], reverse=True)
        if limit is not None:
            rows = rows[:limit]
        return [SimpleNamespace(**{c: r.get(c) for c in cols}) for r in rows]


@pytest.fixture
def session() -> FakeSession:
    return FakeSession()


@pytest.fixture
def store(session: FakeSession) -> CassandraLogStore:
    return CassandraLogStore(session, keyspace="ks", max_in_flight=16)


def _ms(imp):
    t = imp.decided_at
    return imp.__class__(
        **{**imp.__dict__, "decided_at": t.replace(microsecond=t.microsecond // 1000 * 1000)}
    )


def test_is_a_log_store(store) -> None:
    assert isinstance(store, LogStore)


def test_statements_are_prepared_idempotent_with_consistency(store, session) -> None:
    store.write_impressions([make_impression(i) for i in range(5)])
    assert session.prepared, "no prepared statement"
    for stmt in session.prepared:
        assert stmt.is_idempotent is True
        assert stmt.consistency_level == ConsistencyLevel.LOCAL_QUORUM
        assert "ks." in stmt.query_string
    # Every data statement sent was a prepared one, with bound values.
    data = [(s, v) for s, v in session.executed if not isinstance(s, str)]
    assert len(data) == 15  # 3 tables x 5 impressions
    assert all(isinstance(s, FakePrepared) and isinstance(v, tuple) for s, v in data)
    tables = {re.search(r"INTO ks\.(\w+)", s.query_string).group(1) for s, _ in data}
    assert tables == {"impressions_by_time", "impressions_by_decision", "impressions_by_member"}
    # Preparing happens once per session.
    n = len(session.prepared)
    store.write_impressions([make_impression(9)])
    assert len(session.prepared) == n


def test_consistency_from_settings(session) -> None:
    s = CassandraLogStore(session, keyspace="ks", consistency="local_one")
    s.ping()
    assert {p.consistency_level for p in session.prepared} == {ConsistencyLevel.LOCAL_ONE}
    with pytest.raises(ValueError):
        CassandraLogStore(session, consistency="SOMETIMES")


def test_bound_values_encode_features_and_buckets(store, session) -> None:
    imp = make_impression(1, features=(1.0, 2.0))
    store.write_impressions([imp])
    by_time = next(v for s, v in session.executed if "impressions_by_time" in s.query_string)
    assert by_time[0] == "2024-05-01T12"
    assert 0 <= by_time[1] < store.shards
    assert by_time[-1] == b"\x00\x00\x80?\x00\x00\x00@"  # float32 LE
    assert by_time[-2] == "fs-1"


def test_round_trip_through_fake(store) -> None:
    imps = [
        make_impression(i, at=T0 + timedelta(minutes=7 * i, microseconds=1234)) for i in range(30)
    ]
    store.write_impressions(imps)
    store.write_impressions(imps)  # idempotent
    got = list(store.scan_impressions(T0, T0 + timedelta(hours=2)))
    want = [_ms(i) for i in imps if i.decided_at < T0 + timedelta(hours=2)]
    assert got == want
    recent = store.recent_for_member("m1", 3)
    assert [r.decision_id for r in recent] == ["dec-000029", "dec-000028", "dec-000027"]


def test_outcomes_dedup_and_unknown(store, session) -> None:
    store.write_impressions([make_impression(1)])
    o = make_outcome("dec-000001", OutcomeKind.PLAY_STARTED)
    p = make_outcome("dec-000001", OutcomeKind.PLAYBACK_PROGRESS, 30.0)
    orphan = make_outcome("dec-x")
    assert store.write_outcomes([o, p, o, orphan]) == OutcomeWriteResult(3, 1, 1)
    assert store.write_outcomes([o, orphan]) == OutcomeWriteResult(0, 2, 0)
    assert len(session.tables["outcomes_by_decision"]) == 3
    assert len(session.tables["unknown_outcomes"]) == 1
    got = list(store.scan_outcomes(T0, T0 + timedelta(hours=1)))
    assert sorted(x.decision_id for x in got) == ["dec-000001", "dec-000001", "dec-x"]
    assert {x.kind for x in got} == {OutcomeKind.PLAY_STARTED, OutcomeKind.PLAYBACK_PROGRESS}


def test_requests_in_flight_are_bounded(session) -> None:
    s = CassandraLogStore(session, keyspace="ks", max_in_flight=8)
    s.write_impressions([make_impression(i) for i in range(100)])
    assert session.max_pending == 8
    assert session.pending == 0


@pytest.mark.parametrize(
    "exc",
    [
        NoHostAvailable("no hosts", {}),
        WriteTimeout(
            "timeout", consistency=6, required_responses=2, received_responses=1, write_type=0
        ),
    ],
)
def test_driver_outages_become_log_store_unavailable(session, exc) -> None:
    s = CassandraLogStore(session, keyspace="ks")
    s.ping()
    session.fail_async = exc
    with pytest.raises(LogStoreUnavailable):
        s.write_impressions([make_impression(1)])
    assert session.pending == 0  # every request sent was awaited
    session.fail_async = None
    session.fail = exc
    with pytest.raises(LogStoreUnavailable):
        s.ping()


def test_session_factory_is_lazy_and_retried() -> None:
    calls = []
    fake = FakeSession()

    def factory():
        calls.append(1)
        if len(calls) == 1:
            raise NoHostAvailable("down", {})
        return fake

    s = CassandraLogStore(session_factory=factory, keyspace="ks")
    assert calls == []
    with pytest.raises(LogStoreUnavailable):
        s.ping()
    s.ping()
    assert len(calls) == 2
    s.close()
    assert fake.shutdown_called
    with pytest.raises(LogStoreUnavailable):
        s.ping()


def test_handed_in_session_is_not_shut_down(store, session) -> None:
    store.close()
    assert not session.shutdown_called


def test_migrate_renders_and_is_idempotent(session) -> None:
    stmts = migrate(session, "keyart_test", {"class": "NetworkTopologyStrategy", "dc1": 3}, 86400)
    assert len(stmts) == 7
    assert all("IF NOT EXISTS" in s for s in stmts)
    assert all("{keyspace}" not in s and "{ttl}" not in s for s in stmts)
    assert "'class': 'NetworkTopologyStrategy', 'dc1': 3" in stmts[0]
    assert sum("default_time_to_live = 86400" in s for s in stmts) == 6
    assert "TimeWindowCompactionStrategy" in stmts[1]
    assert [s for s, _ in session.executed] == stmts
    assert (
        migrate(session, "keyart_test", {"class": "NetworkTopologyStrategy", "dc1": 3}, 86400)
        == stmts
    )
    for table in PRIMARY_KEYS:
        assert any(f"keyart_test.{table}" in s for s in stmts)
    with pytest.raises(ValueError):
        render_schema("bad-name; DROP")


def test_migrate_on_connect(session) -> None:
    s = CassandraLogStore(session, keyspace="ks", migrate_on_connect=True, ttl=60)
    s.ping()
    assert any(
        isinstance(x, str) and x.startswith("CREATE KEYSPACE IF NOT EXISTS ks")
        for x, _ in session.executed
    )


def test_build_cluster_from_settings() -> None:
    settings = KeyartSettings(
        cassandra_contact_points="10.0.0.1, 10.0.0.2",
        cassandra_port=9142,
        cassandra_local_dc="dc-east",
        cassandra_username="keyart",
        cassandra_password="secret",
        cassandra_consistency="QUORUM",
        cassandra_tls_ca_file=certifi.where(),
    )
    cluster = build_cluster(settings)
    try:
        profile = cluster.profile_manager.default
        lbp = profile.load_balancing_policy
        assert isinstance(lbp, TokenAwarePolicy)
        assert isinstance(lbp._child_policy, DCAwareRoundRobinPolicy)
        assert lbp._child_policy.local_dc == "dc-east"
        assert profile.consistency_level == ConsistencyLevel.QUORUM
        assert cluster.contact_points == ["10.0.0.1", "10.0.0.2"]
        assert cluster.port == 9142
        assert cluster.auth_provider is not None
        assert cluster.ssl_context is not None
    finally:
        cluster.shutdown()
    plain = build_cluster(KeyartSettings(cassandra_contact_points="127.0.0.1"))
    try:
        assert plain.auth_provider is None and plain.ssl_context is None
    finally:
        plain.shutdown()
