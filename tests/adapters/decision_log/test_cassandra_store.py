"""CassandraLogStore against a fake driver session (no Cassandra on this machine).

The fake records every prepare / execute / execute_async call and keeps rows in
memory keyed by each table's primary key, so writes can be read back through the
store's own SELECTs. Timestamps are stored as Cassandra returns them: naive UTC,
millisecond precision. Once schema statements ran on it, it also knows each table's
columns: ALTER TABLE ... ADD of an existing column fails as Cassandra's does, and
preparing a statement naming an unknown column fails.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import certifi
import numpy as np
import pytest
from adapters.decision_log.dlog_helpers import (
    T0,
    check_unknown_outcomes_bounded,
    f32,
    make_impression,
    make_outcome,
)
from cassandra import ConsistencyLevel, InvalidRequest, WriteTimeout
from cassandra.cluster import NoHostAvailable
from cassandra.policies import DCAwareRoundRobinPolicy, TokenAwarePolicy

from keyart.adapters.decision_log.cassandra import (
    CassandraLogStore,
    build_cluster,
    migrate,
    render_schema,
)
from keyart.adapters.decision_log.store import LogStore, LogStoreUnavailable, OutcomeWriteResult
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
        self.columns: dict[str, list[str]] = {}  # table -> columns, from schema statements
        self.column_exists_message = "Invalid column name {} because it conflicts with an existing column"

    # driver API used by the store
    def prepare(self, query: str) -> FakePrepared:
        self._check_columns(query)
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
            self._schema(stmt)
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

    # schema statements
    def _schema(self, cql: str) -> None:
        m = re.match(r"CREATE TABLE IF NOT EXISTS \w+\.(\w+) \((.*)\) WITH", cql, re.S)
        if m:
            names = [ln.split()[0] for ln in m.group(2).splitlines() if ln.strip()]
            self.columns.setdefault(m.group(1), [n for n in names if n != "PRIMARY"])
            return
        m = re.match(r"ALTER TABLE \w+\.(\w+) ADD (\w+) (.+)$", cql)
        if m:
            table, column = m.group(1), m.group(2)
            if table not in self.columns:
                raise InvalidRequest(f"Error from server: code=2200 [Invalid query] "
                                     f"message=\"unconfigured table {table}\"")
            if column in self.columns[table]:
                msg = self.column_exists_message.format(column)
                raise InvalidRequest(f"Error from server: code=2200 [Invalid query] message=\"{msg}\"")
            self.columns[table].append(column)

    def _check_columns(self, query: str) -> None:
        if not self.columns:
            return  # no schema applied to this fake: accept anything
        m = re.match(r"INSERT INTO \w+\.(\w+) \(([^)]*)\)", query) or re.match(
            r"SELECT (.*) FROM \w+\.(\w+) ", query
        )
        assert m, query
        table, cols = (m.group(1), m.group(2)) if query.startswith("INSERT") else (m.group(2), m.group(1))
        for c in (c.strip() for c in cols.split(",")):
            if c not in self.columns[table]:
                raise InvalidRequest(f"Undefined column name {c} in table {table}")

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
        conds = re.findall(r"(\w+) (=|>=|<|IN) \?", m.group(3))
        vals = [_cass_value(v) for v in values]
        limit = vals.pop() if m.group(4) else None
        ops = {"=": lambda a, b: a == b, ">=": lambda a, b: a >= b, "<": lambda a, b: a < b,
               "IN": lambda a, b: a in b}
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
    for level in ("SERIAL", "LOCAL_SERIAL", "any"):  # Cassandra refuses plain writes / reads at these
        with pytest.raises(ValueError, match="needs a level valid for reads and writes"):
            CassandraLogStore(session, consistency=level)


def test_a_long_sparse_scan_takes_few_queries(store, session) -> None:
    """A year of hour buckets (what `keyart log tail` looks back over) in a few hundred
    multi-partition queries, not one per (bucket, shard): 70,080 took minutes on a real node."""
    store.write_impressions([make_impression(1, at=T0 - timedelta(days=200))])
    session.executed.clear()
    got = list(store.scan_impressions(T0 - timedelta(days=365), T0))
    assert [i.decision_id for i in got] == ["dec-000001"]
    assert 365 < len(session.executed) < 400


def test_bound_values_encode_features_and_buckets(store, session) -> None:
    imp = make_impression(1, features=f32(1.0, 2.0))
    store.write_impressions([imp])
    by_time = next(v for s, v in session.executed if "impressions_by_time" in s.query_string)
    assert by_time[0] == "2024-05-01T12"
    assert 0 <= by_time[1] < store.shards
    assert by_time[-7] == b"\x00\x00\x80?\x00\x00\x00@"  # float32 LE
    assert by_time[-8] == "fs-1"
    # actor_affinity: two parallel lists, in the statement's top_actors / top_actor_weights.
    assert by_time[-6:-4] == (["actor-1", "actor-x"], [0.75, 0.5])
    # experiment, cell, shadows (JSON text) and latency last: none for this decision.
    assert by_time[-4:] == ("", "", "[]", 0.0)


def test_bound_values_carry_actor_affinity_to_every_table(store, session) -> None:
    actors = (("nm0000123", 0.8125), ("nm0000456", np.float32(0.25)))
    store.write_impressions([make_impression(1, actor_affinity=actors)])
    store.write_impressions([make_impression(2, actor_affinity=(), features=b"")])
    writes = [(s.query_string, v) for s, v in session.executed if not isinstance(s, str)]
    assert len(writes) == 6
    for query, values in writes:
        cols = [c.strip() for c in re.search(r"\(([^)]*)\)", query).group(1).split(",")]
        bound = dict(zip(cols, values, strict=True))
        if bound["decision_id"] == "dec-000001":
            assert bound["top_actors"] == ["nm0000123", "nm0000456"]
            assert bound["top_actor_weights"] == [0.8125, 0.25]
            assert all(type(w) is float for w in bound["top_actor_weights"])
        else:  # empty lists, never None (a null is a tombstone)
            assert bound["top_actors"] == [] and bound["top_actor_weights"] == []


def test_actor_affinity_read_back_and_rows_without_it(store, session) -> None:
    actors = (("nm0000123", 0.8125), ("nm0000456", 0.25))
    store.write_impressions([make_impression(1, actor_affinity=actors), make_impression(2)])
    # A row written before the columns existed: Cassandra returns null for both.
    for table in ("impressions_by_time", "impressions_by_member"):
        for row in session.tables[table].values():
            if row["decision_id"] == "dec-000002":
                del row["top_actors"], row["top_actor_weights"]
    got = list(store.scan_impressions(T0, T0 + timedelta(hours=1)))
    assert [i.actor_affinity for i in got] == [actors, ()]
    recent = store.recent_for_member("m1", 2)
    assert [i.actor_affinity for i in recent] == [(), actors]


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
    assert len(stmts) == 25  # 7 CREATE, 6 actor-column and 12 experiment-column ALTERs
    creates, alters = stmts[:7], stmts[7:]
    assert all(s.startswith("CREATE") and "IF NOT EXISTS" in s for s in creates)
    assert all(s.startswith("ALTER TABLE keyart_test.impressions_by_") for s in alters)
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


IMPRESSION_TABLES = ("impressions_by_time", "impressions_by_decision", "impressions_by_member")
ACTOR_COLUMNS = {"top_actors": "frozen<list<text>>", "top_actor_weights": "frozen<list<float>>"}
EXPERIMENT_COLUMNS = {"experiment": "text", "cell": "text", "shadows": "text", "latency_ms": "double"}
ADDED_COLUMNS = {**ACTOR_COLUMNS, **EXPERIMENT_COLUMNS}  # in the order of schema.cql's ALTERs


def test_new_tables_have_the_actor_columns(session) -> None:
    stmts = migrate(session, "ks")
    for table in IMPRESSION_TABLES:
        create = next(s for s in stmts if f"TABLE IF NOT EXISTS ks.{table} (" in s)
        for column, cql_type in ADDED_COLUMNS.items():
            assert re.search(rf"\b{column}\s+{re.escape(cql_type)}", create)
            assert f"ALTER TABLE ks.{table} ADD {column} {cql_type}" in stmts
        assert list(ADDED_COLUMNS) == session.columns[table][-len(ADDED_COLUMNS):]


def _old_keyspace(session: FakeSession) -> None:
    """The keyspace as an older schema.cql left it: no actor or experiment columns."""
    migrate(session, "ks")
    for table in IMPRESSION_TABLES:
        session.columns[table] = [c for c in session.columns[table] if c not in ADDED_COLUMNS]
    session.executed.clear()


@pytest.mark.parametrize(
    "exists_message",
    [
        "Invalid column name {} because it conflicts with an existing column",  # 3.x, 4.0
        "Column with name '{}' already exists",  # 4.1+
    ],
)
def test_migrate_adds_actor_columns_to_old_tables_idempotently(session, exists_message) -> None:
    session.column_exists_message = exists_message
    _old_keyspace(session)
    old_store = CassandraLogStore(session, keyspace="ks")
    with pytest.raises(InvalidRequest, match="Undefined column name top_actors"):
        old_store.ping()  # the new statements cannot be prepared on the old tables

    stmts = migrate(session, "ks")
    for table in IMPRESSION_TABLES:
        assert session.columns[table][-len(ADDED_COLUMNS):] == list(ADDED_COLUMNS)
    # Again, and again: every ADD now conflicts and is skipped; nothing changes.
    before = {t: list(c) for t, c in session.columns.items()}
    assert migrate(session, "ks") == stmts
    assert migrate(session, "ks") == stmts
    assert session.columns == before


def test_migrate_on_connect_upgrades_old_tables(session) -> None:
    _old_keyspace(session)
    s = CassandraLogStore(session, keyspace="ks", migrate_on_connect=True)
    actors = (("nm0000123", 0.8125),)
    s.write_impressions([make_impression(1, actor_affinity=actors)])
    assert [i.actor_affinity for i in s.scan_impressions(T0, T0 + timedelta(hours=1))] == [actors]


def test_migrate_raises_other_invalid_requests(session) -> None:
    orig = session.execute

    def failing(stmt, values=None):
        if isinstance(stmt, str) and stmt.startswith("ALTER"):
            raise InvalidRequest("Unknown type ks.frozen")
        return orig(stmt, values)

    session.execute = failing
    with pytest.raises(InvalidRequest, match="Unknown type"):
        migrate(session, "ks")


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
        assert cluster.reconnection_policy.max_delay == 10.0  # back within seconds of the node
    finally:
        cluster.shutdown()
    plain = build_cluster(KeyartSettings(cassandra_contact_points="127.0.0.1"))
    try:
        assert plain.auth_provider is None and plain.ssl_context is None
    finally:
        plain.shutdown()



def test_outcomes_of_an_unknown_decision_are_bounded(store) -> None:
    check_unknown_outcomes_bounded(store)
