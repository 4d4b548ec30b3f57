"""Runs against a real Cassandra when KEYART_CASSANDRA_HOSTS (or ..._CONTACT_POINTS) is set.

Uses a throw-away keyspace (SimpleStrategy RF 1 unless KEYART_CASSANDRA_LOCAL_DC is
set, then NetworkTopologyStrategy RF 1 in that DC) and drops it afterwards.
"""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from adapters.decision_log.dlog_helpers import make_impression, make_outcome

from keyart.adapters.decision_log.cassandra import CassandraLogStore, connect_session, migrate
from keyart.adapters.decision_log.store import OutcomeWriteResult
from keyart.settings import KeyartSettings

pytestmark = [
    pytest.mark.cassandra,
    pytest.mark.skipif(
        not (os.environ.get("KEYART_CASSANDRA_HOSTS") or os.environ.get("KEYART_CASSANDRA_CONTACT_POINTS")),
        reason="needs a real Cassandra: set KEYART_CASSANDRA_HOSTS=host1,host2 (see README)",
    ),
]


@pytest.fixture(scope="module")
def live_store():
    keyspace = "keyart_test_" + uuid.uuid4().hex[:10]
    settings = KeyartSettings(cassandra_keyspace=keyspace)
    session = connect_session(settings)
    dc = settings.cassandra_local_dc
    replication = (
        {"class": "NetworkTopologyStrategy", dc: 1}
        if dc
        else {"class": "SimpleStrategy", "replication_factor": 1}
    )
    migrate(session, keyspace, replication, ttl=3600)
    migrate(session, keyspace, replication, ttl=3600)  # idempotent
    store = CassandraLogStore(
        session, keyspace=keyspace, consistency=settings.cassandra_consistency
    )
    yield store
    store.close()
    session.execute(f"DROP KEYSPACE IF EXISTS {keyspace}")
    session.cluster.shutdown()


def test_write_scan_and_outcomes(live_store: CassandraLogStore) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    imps = [
        make_impression(i, at=now - timedelta(minutes=90) + timedelta(minutes=i), member="live")
        for i in range(20)
    ]
    live_store.ping()
    live_store.write_impressions(imps)
    live_store.write_impressions(imps)  # idempotent
    got = list(live_store.scan_impressions(now - timedelta(hours=2), now))
    assert [g.decision_id for g in got] == [i.decision_id for i in imps]
    assert got[0].features == imps[0].features
    assert got[0].actor_affinity == imps[0].actor_affinity  # weights exact in float32
    recent = live_store.recent_for_member("live", 3)
    assert [r.decision_id for r in recent] == ["dec-000019", "dec-000018", "dec-000017"]

    o = make_outcome("dec-000001", at=now - timedelta(minutes=5))
    r = live_store.write_outcomes([o, o, make_outcome("nope", at=now - timedelta(minutes=5))])
    assert r == OutcomeWriteResult(written=2, duplicates=1, unknown_decision=1)
    assert live_store.write_outcomes([o]) == OutcomeWriteResult(0, 1, 0)
    outs = list(live_store.scan_outcomes(now - timedelta(hours=1), now))
    assert sorted(x.decision_id for x in outs) == ["dec-000001", "nope"]
