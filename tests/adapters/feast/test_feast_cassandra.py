"""Feast's production online store on a real Cassandra 5.0 node.

`features/production/feature_store.cassandra.yaml`, copied verbatim into a repository laid
out as a deployment's (`features/` beside `var/`), is applied and materialized into the
live node of tests/live_cassandra.py; Keyart's feature adapter reads the member features
back (the same as from the embedded SQLite store), and the ranker serves a page from them.
The read latency of one page's lookup is measured on both stores side by side.
"""

from __future__ import annotations

import shutil
import statistics
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from live_cassandra import LiveCassandra

from keyart.adapters.catalog.parquet import load_catalog
from keyart.adapters.feast.online import MemberFeatureSource
from keyart.adapters.feast.repo import apply_and_materialize, prepare_feature_repo
from keyart.jobs.world.features import build_features
from keyart.jobs.world.synthetic import build_world

pytestmark = [pytest.mark.cassandra, pytest.mark.integration]

ROOT = Path(__file__).resolve().parents[3]
NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def stores(cassandra_node: LiveCassandra, tmp_path_factory: pytest.TempPathFactory, monkeypatch_module):
    """(cassandra source, sqlite source, world dir) on one world."""
    from keyart.adapters.decision_log.cassandra import connect_session

    root = tmp_path_factory.mktemp("feast-cassandra")
    build_world(root / "var" / "world", seed=11, members=200, titles=20, now=NOW)
    build_features(root / "var" / "world")
    repo = root / "features"
    repo.mkdir()
    shutil.copyfile(ROOT / "features" / "definitions.py", repo / "definitions.py")
    shutil.copyfile(ROOT / "features" / "production" / "feature_store.cassandra.yaml", repo / "feature_store.yaml")
    keyspace = f"keyart_features_{uuid.uuid4().hex[:8]}"
    session = connect_session(cassandra_node.settings(keyspace))
    session.execute(f"CREATE KEYSPACE {keyspace} WITH replication = "
                    "{'class': 'SimpleStrategy', 'replication_factor': 1}", timeout=60)
    for name, value in (("HOST", cassandra_node.host), ("PORT", str(cassandra_node.port)),
                        ("KEYSPACE", keyspace), ("USER", cassandra_node.username or ""),
                        ("PASSWORD", cassandra_node.password or ""), ("LOCAL_DC", "datacenter1")):
        monkeypatch_module.setenv(f"KEYART_FEAST_CASSANDRA_{name}", value)
    monkeypatch_module.delenv("KEYART_FEAST_WORLD_DIR", raising=False)
    started = time.monotonic()
    cassandra = MemberFeatureSource(apply_and_materialize(repo, end=NOW))
    print(f"\nfeast apply + materialize into Cassandra: {time.monotonic() - started:.1f} s")
    sqlite_repo = prepare_feature_repo(root / "sqlite", ROOT / "features")
    shutil.copytree(root / "var" / "world", root / "sqlite" / "world")
    sqlite = MemberFeatureSource(apply_and_materialize(sqlite_repo, end=NOW))
    tables = {r.table_name for r in session.execute(
        "SELECT table_name FROM system_schema.tables WHERE keyspace_name = %s", (keyspace,))}
    yield cassandra, sqlite, root / "var" / "world", tables
    session.cluster.shutdown()


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def test_materialized_into_cassandra_and_read_back_like_sqlite(stores) -> None:
    cassandra, sqlite, _, tables = stores
    assert {"keyart_member_genre_affinity", "keyart_member_actor_affinity", "keyart_member_profile",
            "keyart_member_title_interaction"} <= tables  # Feast's tables in our keyspace
    ids = [f"m{k:05d}" for k in range(40)] + ["nobody"]
    from_cassandra, from_sqlite = cassandra.get_many(ids), sqlite.get_many(ids)
    assert from_cassandra[-1] is None and from_sqlite[-1] is None
    known = [m for m in from_cassandra if m is not None]
    assert len(known) > 30 and sum(m.history_views > 0 for m in known) > 20  # the v2 history fields too
    for a, b in zip(from_cassandra, from_sqlite):
        assert a == b


def test_ranker_serves_a_page_from_cassandra_features(stores, tiny_model) -> None:
    from keyart.core.featurize import CatalogIndex
    from keyart.core.ranker import PolicyConfig, Ranker
    from keyart.domain import RequestContext, TitleRequest

    cassandra, _, world_dir, _ = stores
    index = CatalogIndex.build(load_catalog(world_dir), tiny_model.space)  # the columns the model learned
    member = cassandra.get("m00003")
    assert member is not None
    ctx = RequestContext(country=member.country, language=member.language, device="TV", surface="home",
                         client_time=NOW)
    titles = [TitleRequest(t) for t in sorted(index.catalog.titles)[:12]]
    policy, selections = Ranker(index, tiny_model, PolicyConfig()).rank(member, ctx, titles, NOW)
    assert len(selections) == 12 and all(s.fallback_reason == "" and s.features for s in selections)


def test_feature_read_latency_cassandra_against_sqlite(stores) -> None:
    """One page's lookup (one member, as the ranker reads it), 300 reads per store,
    interleaved so both see the same machine load; medians printed for the closing note."""
    cassandra, sqlite, _, _ = stores
    ids = [f"m{k:05d}" for k in range(200)]
    times: dict[str, list[float]] = {"cassandra": [], "sqlite": []}
    for k in range(300):
        for name, source in (("cassandra", cassandra), ("sqlite", sqlite)):
            t0 = time.perf_counter()
            source.get(ids[k % len(ids)])
            times[name].append((time.perf_counter() - t0) * 1e3)
    med = {n: statistics.median(v) for n, v in times.items()}
    p99 = {n: sorted(v)[int(0.99 * len(v))] for n, v in times.items()}
    print(f"\nmember feature read, median / p99 ms: cassandra {med['cassandra']:.2f} / {p99['cassandra']:.2f}, "
          f"sqlite {med['sqlite']:.2f} / {p99['sqlite']:.2f}")
    assert all(v > 0 for v in med.values())
