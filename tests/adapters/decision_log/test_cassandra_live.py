"""CassandraLogStore against a real Cassandra 5.0 node (the session's ``cassandra_node``:
started by the fixture, or KEYART_CASSANDRA_HOSTS when set).

Each test works in a throw-away keyspace (SimpleStrategy RF 1), dropped afterwards.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from adapters.decision_log.dlog_helpers import T0, make_impression, make_outcome
from live_cassandra import column, live_keyspace

from keyart.adapters.decision_log.cassandra import CassandraLogStore, migrate
from keyart.adapters.decision_log.records import hour_bucket, shard_of
from keyart.adapters.decision_log.store import LogStoreUnavailable, OutcomeWriteResult
from keyart.domain import OutcomeKind

pytestmark = pytest.mark.cassandra

TABLES = {
    "impressions_by_time",
    "impressions_by_decision",
    "impressions_by_member",
    "outcomes_by_decision",
    "outcomes_by_time",
    "unknown_outcomes",
}


@pytest.fixture
def ks(cassandra_node):
    with live_keyspace(cassandra_node) as (session, keyspace):
        yield session, keyspace


@pytest.fixture(scope="module")
def shared_ks(cassandra_node):
    """One keyspace for the tests that only write dec-000001 (creating one costs ~2 s)."""
    with live_keyspace(cassandra_node) as (session, keyspace):
        yield session, keyspace


def store_on(ks, **kw) -> CassandraLogStore:
    session, keyspace = ks
    return CassandraLogStore(session, keyspace=keyspace, **kw)


def test_migrate_twice_is_a_no_op(ks) -> None:
    session, keyspace = ks
    before = {
        r.table_name: r.default_time_to_live
        for r in session.execute(
            "SELECT table_name, default_time_to_live FROM system_schema.tables WHERE keyspace_name = %s", (keyspace,)
        )
    }
    assert set(before) == TABLES
    migrate(session, keyspace)  # CREATE IF NOT EXISTS + ALTER ... ADD of existing columns: skipped
    cols = {
        r.column_name
        for r in session.execute(
            "SELECT column_name FROM system_schema.columns WHERE keyspace_name = %s AND table_name = %s",
            (keyspace, "impressions_by_time"),
        )
    }
    assert {"top_actors", "top_actor_weights", "features", "hour_bucket", "shard"} <= cols


def test_write_and_read_back_impressions_and_outcomes(ks) -> None:
    store = store_on(ks)
    now = datetime.now(UTC).replace(microsecond=0)
    imps = [make_impression(i, at=now - timedelta(minutes=90) + timedelta(minutes=i), member="live") for i in range(20)]
    imps.append(make_impression(50, at=now - timedelta(minutes=30), member="fallback", fallback_reason="deadline",
                                actor_affinity=(), features=b""))  # fmt: skip
    store.ping()
    store.write_impressions(imps)
    got = list(store.scan_impressions(now - timedelta(hours=2), now))
    assert [g.decision_id for g in got] == [i.decision_id for i in imps]  # time order
    by_id = {g.decision_id: g for g in got}
    for imp in imps:
        assert by_id[imp.decision_id] == imp  # every field, features (float32) and actors included
    assert [r.decision_id for r in store.recent_for_member("live", 3)] == ["dec-000019", "dec-000018", "dec-000017"]
    assert store.recent_for_member("nobody", 5) == []

    o = make_outcome("dec-000001", OutcomeKind.PLAYBACK_PROGRESS, 12.5, at=now - timedelta(minutes=5))
    unknown = make_outcome("nope", at=now - timedelta(minutes=4))
    assert store.write_outcomes([o, o, unknown]) == OutcomeWriteResult(written=2, duplicates=1, unknown_decision=1)
    outs = list(store.scan_outcomes(now - timedelta(hours=1), now))
    assert outs == [o, unknown]
    session, keyspace = ks
    assert column(session, keyspace, "unknown_outcomes") == ["nope"]
    known = session.execute(f"SELECT decision_known FROM {keyspace}.outcomes_by_decision WHERE decision_id = 'nope'")
    assert [r.decision_known for r in known] == [False]


def test_scan_respects_the_range_across_hours(ks) -> None:
    store = store_on(ks)
    start = T0.replace(minute=0)  # 12:00
    imps = [make_impression(i, at=start + timedelta(minutes=7 * i)) for i in range(30)]  # 12:00 .. 15:23
    store.write_impressions(imps)
    since, until = start + timedelta(minutes=14), start + timedelta(hours=2, minutes=7)
    got = [g.decision_id for g in store.scan_impressions(since, until)]
    want = [i.decision_id for i in imps if since <= i.decided_at < until]  # since inclusive, until exclusive
    assert got == want and got[0] == "dec-000002" and "dec-000019" not in got


def test_idempotent_retries_leave_one_row_per_decision(ks) -> None:
    """A batch re-sent whole (a retry after a timeout, a spool replay) and a part of it re-sent
    upsert the same rows: counted by decision_id, every table holds each decision once."""
    session, keyspace = ks
    store = store_on(ks)
    imps = [make_impression(i, member=f"m{i % 3}") for i in range(200)]
    store.write_impressions(imps)
    store.write_impressions(imps)
    store.write_impressions(imps[50:80])
    for table in ("impressions_by_decision", "impressions_by_time", "impressions_by_member"):
        ids = column(session, keyspace, table)
        assert len(ids) == len(set(ids)) == 200, table
    assert session.execute(f"SELECT COUNT(*) FROM {keyspace}.impressions_by_decision").one().count == 200
    scanned = [i.decision_id for i in store.scan_impressions(T0, T0 + timedelta(hours=1))]
    assert len(scanned) == len(set(scanned)) == 200

    outs = [make_outcome(i.decision_id, at=T0 + timedelta(minutes=10)) for i in imps[:40]]
    assert store.write_outcomes(outs) == OutcomeWriteResult(40, 0, 0)
    assert store.write_outcomes(outs) == OutcomeWriteResult(0, 40, 0)  # retried: all duplicates
    ids = column(session, keyspace, "outcomes_by_time")
    assert len(ids) == len(set(ids)) == 40


def test_time_scan_pages_through_a_partition_larger_than_fetch_size(ks) -> None:
    """One (hour, shard) partition of 1,200 rows: with fetch_size 1000 (the default) the
    driver needs two pages, with 150 eight; every row comes back once, in order."""
    session, keyspace = ks
    ids = [f"pg-{i:05d}" for i in range(20000) if shard_of(f"pg-{i:05d}") == 3][:1200]
    assert len(ids) == 1200
    imps = [make_impression(0, decision_id=d, at=T0 + timedelta(seconds=2 * k)) for k, d in enumerate(ids)]
    default = store_on(ks)
    assert default.fetch_size == 1000
    default.write_impressions(imps)

    _, stmts = default._ready()
    first = session.execute(stmts["sel_imp_time"], ([hour_bucket(T0)], [3], T0, T0 + timedelta(hours=1)))
    assert first.has_more_pages and len(first.current_rows) == 1000  # the bound statement carries fetch_size

    for store in (default, store_on(ks, fetch_size=150)):
        got = [i.decision_id for i in store.scan_impressions(T0, T0 + timedelta(hours=1))]
        assert got == ids
    # 10:00 is empty, so the scan then asks for 11:00 and 12:00 in one query; its first page
    # is full, and the store takes that run again an hour at a time: still every row once.
    got = [i.decision_id for i in default.scan_impressions(T0 - timedelta(hours=2), T0 + timedelta(hours=3))]
    assert got == ids


TTL_S = 5


def test_table_ttl_expires_rows(cassandra_node, shared_ks) -> None:
    """migrate(ttl=N) sets default_time_to_live on every table; rows written go after N s.

    N is 5 s, not 1: on a loaded machine a 1 s row could expire between its write and the
    read of its TTL (CI saw it)."""
    with live_keyspace(cassandra_node, ttl=TTL_S) as (session, keyspace):
        ttls = session.execute(
            "SELECT table_name, default_time_to_live FROM system_schema.tables WHERE keyspace_name = %s", (keyspace,)
        )
        assert {r.table_name: r.default_time_to_live for r in ttls} == dict.fromkeys(TABLES, TTL_S)
        store = CassandraLogStore(session, keyspace=keyspace)
        now = datetime.now(UTC)
        written = time.monotonic()
        store.write_impressions([make_impression(1, at=now)])
        store.write_outcomes([make_outcome("dec-000001", at=now)])
        left = session.execute(f"SELECT TTL(request_id) AS t FROM {keyspace}.impressions_by_decision").one().t
        assert 1 <= left <= TTL_S
        window = (now - timedelta(minutes=1), now + timedelta(minutes=1))
        assert len(list(store.scan_impressions(*window))) == 1
        # A cell with TTL N s is gone within N + 1 s of its write (the second it was written in).
        time.sleep(max(0.0, written + TTL_S + 1.1 - time.monotonic()))
        assert list(store.scan_impressions(*window)) == []
        assert list(store.scan_outcomes(*window)) == []
        assert column(session, keyspace, "impressions_by_decision") == []
    session, keyspace = shared_ks  # ttl 0 (the default): rows kept, no TTL on the cells
    CassandraLogStore(session, keyspace=keyspace).write_impressions([make_impression(1)])
    ttl = session.execute(f"SELECT TTL(request_id) AS t FROM {keyspace}.impressions_by_decision WHERE decision_id = %s",
                          ("dec-000001",)).one().t  # fmt: skip
    assert ttl is None


@pytest.mark.parametrize("level", ["LOCAL_QUORUM", "ONE", "LOCAL_ONE", "QUORUM", "ALL", "EACH_QUORUM"])
def test_consistency_levels_a_single_node_can_meet(shared_ks, level) -> None:
    store = store_on(shared_ks, consistency=level)
    store.write_impressions([make_impression(1)])
    store.write_outcomes([make_outcome("dec-000001")])
    assert [i.decision_id for i in store.scan_impressions(T0, T0 + timedelta(hours=1))] == ["dec-000001"]
    assert len(list(store.scan_outcomes(T0, T0 + timedelta(hours=1)))) == 1


@pytest.mark.parametrize("level", ["TWO", "THREE"])
def test_consistency_a_single_node_cannot_meet_is_unavailable(shared_ks, level) -> None:
    """RF 1 cannot give two or three replicas: Cassandra answers Unavailable at once, which the
    store raises as LogStoreUnavailable naming the level (the writer then spools: nothing lost)."""
    store = store_on(shared_ks, consistency=level)
    store.ping()  # system.local is node-local: the ping does not use the level
    t0 = time.monotonic()
    for call in (
        lambda: store.write_impressions([make_impression(1)]),
        lambda: list(store.scan_impressions(T0, T0 + timedelta(hours=1))),
        lambda: store.write_outcomes([make_outcome("dec-000001")]),
    ):
        with pytest.raises(LogStoreUnavailable, match=f"Cannot achieve consistency level {level}"):
            call()
    assert time.monotonic() - t0 < 5  # no timeout: the coordinator refuses at once


@pytest.mark.parametrize("level", ["SERIAL", "LOCAL_SERIAL", "ANY"])
def test_consistency_levels_unusable_for_the_log_are_refused_up_front(shared_ks, level) -> None:
    """SERIAL/LOCAL_SERIAL are for lightweight transactions (a plain write is refused), ANY is
    refused for reads (and write_outcomes reads first): the store rejects them when built."""
    with pytest.raises(ValueError, match=f"consistency level {level}"):
        store_on(shared_ks, consistency=level)
