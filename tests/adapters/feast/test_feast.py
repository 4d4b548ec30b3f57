"""Feast repo: isolated stores, online member lookups, point-in-time retrieval, catalog."""

from __future__ import annotations

import dataclasses
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest
import yaml
from feast import FeatureStore

from keyart.adapters.catalog.parquet import load_catalog
from keyart.adapters.feast.online import MemberFeatureSource
from keyart.adapters.feast.repo import apply_and_materialize, load_definitions, prepare_feature_repo
from keyart.domain import MemberFeatures
from keyart.jobs.world.features import build_features
from keyart.jobs.world.synthetic import build_world
from keyart.jobs.world.vocab import GENRES
from keyart.jobs.world.world_model import load_world

ROOT = Path(__file__).resolve().parents[3]
TEMPLATE = ROOT / "features"
NOW = datetime(2026, 1, 1, tzinfo=UTC)
PIT_MEMBER = "m_pit"
T0 = pd.Timestamp(NOW) - pd.Timedelta(days=20)
T1 = pd.Timestamp(NOW) - pd.Timedelta(days=10)


def _shares(out: pd.DataFrame, genre: str) -> list[float]:
    """The share of `genre` per row of a historical frame (NaN where nothing was known)."""
    return [float("nan") if not isinstance(gs, (list, tuple)) and not hasattr(gs, "tolist")
            else float(list(ws)[list(gs).index(genre)]) for gs, ws in zip(out["genres"], out["genre_weights"])]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("keyart")
    build_world(d / "world", seed=11, members=200, titles=20, now=NOW)
    build_features(d / "world")
    # A constructed point-in-time case: action affinity 0.1 from T0, 0.9 from T1.
    path = d / "world" / "member_genre_affinity.parquet"
    g = pd.read_parquet(path)
    genres = list(g["genres"].iloc[0])
    weights = [[0.1 if x == "action" else 0.9 if x == "drama" else 0.0 for x in genres],
               [0.9 if x == "action" else 0.1 if x == "drama" else 0.0 for x in genres]]
    extra = pd.DataFrame({"genres": [genres, genres], "genre_weights": weights})
    extra["history_views"] = [3.0, 7.0]
    extra["history_minutes"] = [150.0, 400.0]
    extra.insert(0, "member_id", PIT_MEMBER)
    extra["event_timestamp"] = [T0, T1]
    extra["created"] = [T0, T1]
    pd.concat([g, extra[g.columns]], ignore_index=True).to_parquet(path, index=False)
    return d


@pytest.fixture(scope="module")
def store(data_dir: Path) -> FeatureStore:
    repo = prepare_feature_repo(data_dir, TEMPLATE)
    return apply_and_materialize(repo, end=NOW)


@pytest.fixture(scope="module")
def source(store: FeatureStore) -> MemberFeatureSource:
    return MemberFeatureSource(store)


def test_prepared_repo_is_isolated(data_dir: Path, store: FeatureStore) -> None:
    repo = data_dir / "feast_repo"
    cfg = yaml.safe_load((repo / "feature_store.yaml").read_text())
    assert cfg["project"] == "keyart"
    assert Path(cfg["registry"]["path"]) == data_dir.resolve() / "feast" / "registry.db"
    assert Path(cfg["online_store"]["path"]) == data_dir.resolve() / "feast" / "online.db"
    assert (data_dir / "feast" / "registry.db").exists() and (data_dir / "feast" / "online.db").exists()
    defs = load_definitions(repo)
    assert Path(defs.WORLD_DIR) == data_dir.resolve() / "world"
    names = {fv.name for fv in store.list_feature_views()}
    assert names == {
        "member_genre_affinity", "member_actor_affinity", "member_profile",
        "member_title_interaction",
    }
    svc = store.get_feature_service("member_context_v3")
    assert {p.name for p in svc.feature_view_projections} == {
        "member_genre_affinity", "member_actor_affinity", "member_profile", "member_title_interaction",
    }


def test_default_repo_uses_relative_var_paths() -> None:
    cfg = yaml.safe_load((TEMPLATE / "feature_store.yaml").read_text())
    assert cfg["registry"]["path"] == "../var/feast/registry.db"
    assert cfg["online_store"] == {"type": "sqlite", "path": "../var/feast/online.db"}
    assert cfg["entity_key_serialization_version"] == 3
    for prod in ("redis", "cassandra"):
        p = yaml.safe_load((TEMPLATE / "production" / f"feature_store.{prod}.yaml").read_text())
        assert p["online_store"]["type"] == prod
        assert {k: v for k, v in p.items() if k != "online_store"}.keys() == cfg.keys() - {"online_store"}


def test_online_lookup_demo_member(data_dir: Path, source: MemberFeatureSource) -> None:
    world = load_world(data_dir / "world")
    demo = world.viewing["member_id"].value_counts().index[0]
    f = source.get(demo)
    assert isinstance(f, MemberFeatures)
    row = world.members.set_index("member_id").loc[demo]
    assert (f.country, f.language, f.main_device) == (row["country"], row["language"], row["main_device"])
    assert f.tenure_days == pytest.approx(row["tenure_days"])
    assert set(f.genre_affinity) == {g for gs in world.titles["genres"] for g in gs}  # the catalog's own
    assert sum(f.genre_affinity.values()) == pytest.approx(1.0)
    assert f.actor_affinity and all(0 <= w <= 1 for w in f.actor_affinity.values())
    assert f.interacted_titles == frozenset(world.viewing.loc[world.viewing["member_id"] == demo, "title_id"])
    mine = world.viewing[world.viewing["member_id"] == demo]
    assert f.history_views == len(mine)  # the latest snapshot is at the world's now: all its history
    assert f.history_minutes == pytest.approx(mine["minutes_watched"].sum())


def test_online_unknown_member_is_none(source: MemberFeatureSource) -> None:
    assert source.get("m99999") is None
    many = source.get_many(["m99999", "m00001", "nobody"])
    assert many[0] is None and many[2] is None
    assert many[1] is not None and many[1].member_id == "m00001"
    assert source.get_many([]) == []


def _same(a: MemberFeatures | None, b: MemberFeatures | None) -> bool:
    """Equal, NaN tenure included (NaN != NaN)."""
    if a is None or b is None:
        return a is b
    na, nb = a.tenure_days != a.tenure_days, b.tenure_days != b.tenure_days
    return (na and nb and a == replace(b, tenure_days=a.tenure_days)) or a == b


def test_direct_online_read_equals_the_sdk(data_dir: Path, source: MemberFeatureSource) -> None:
    """`get` (the provider's online_read) returns what get_online_features returns, for every
    member of the world, unknown ones and the point-in-time test member included."""
    world = load_world(data_dir / "world")
    ids = [*world.members["member_id"].astype(str), "m99999", PIT_MEMBER, ""]
    via_sdk = source.get_many(ids)
    assert sum(f is not None for f in via_sdk) > 150
    mismatched = [m for m, want in zip(ids, via_sdk) if not _same(source.get(m), want)]
    assert mismatched == []


def test_one_statement_read_equals_the_sdk(data_dir: Path, store: FeatureStore) -> None:
    """On SQLite, after `bound_wait`, `get` reads all views with one statement: the same
    features as get_online_features for every member, unknown ones included."""
    inline = MemberFeatureSource(store)
    assert inline.bound_wait(0.05) is True
    assert inline._sqlite_read is not None and inline._sqlite_read.count("UNION ALL") == len(inline._views or []) - 1
    world = load_world(data_dir / "world")
    ids = [*world.members["member_id"].astype(str), "m99999", PIT_MEMBER, ""]
    via_sdk = inline.get_many(ids)
    assert sum(f is not None for f in via_sdk) > 150
    assert [m for m, want in zip(ids, via_sdk) if not _same(inline.get(m), want)] == []


def test_online_returns_latest_snapshot(source: MemberFeatureSource) -> None:
    f = source.get(PIT_MEMBER)
    assert f is not None
    assert f.genre_affinity["action"] == pytest.approx(0.9)
    assert f.country == "" and f.interacted_titles == frozenset()


def test_point_in_time_never_leaks_future(source: MemberFeatureSource) -> None:
    times = [T0 - pd.Timedelta(hours=1), T0, T0 + pd.Timedelta(days=5), T1 - pd.Timedelta(seconds=1), T1,
             T1 + pd.Timedelta(days=2)]
    entity_df = pd.DataFrame({"member_id": PIT_MEMBER, "event_timestamp": times, "row": range(len(times))})
    out = source.historical(entity_df)
    assert out["row"].tolist() == list(range(len(times)))  # one row per input row, in order
    action = _shares(out, "action")
    assert pd.isna(action[0])  # before any snapshot: nothing, never the later value
    assert action[1:4] == pytest.approx([0.1, 0.1, 0.1])  # the T1 value must not leak before T1
    assert action[4:] == pytest.approx([0.9, 0.9])


def test_historical_keeps_duplicate_and_unknown_rows(source: MemberFeatureSource) -> None:
    t = T0 + pd.Timedelta(days=1)
    entity_df = pd.DataFrame({
        "member_id": [PIT_MEMBER, PIT_MEMBER, "nobody", PIT_MEMBER],
        "event_timestamp": [t, t, t, T0 - pd.Timedelta(days=3)],
        "title_id": ["t0001", "t0002", "t0003", "t0004"],
    })
    out = source.historical(entity_df)
    assert out["title_id"].tolist() == ["t0001", "t0002", "t0003", "t0004"]
    action = _shares(out, "action")
    assert action[:2] == pytest.approx([0.1, 0.1])
    assert all(pd.isna(a) for a in action[2:])


def test_historical_respects_created_time(data_dir: Path, source: MemberFeatureSource) -> None:
    g = pd.read_parquet(data_dir / "world" / "member_genre_affinity.parquet")
    g = g[g["member_id"] != PIT_MEMBER]
    snaps = sorted(g["event_timestamp"].unique())
    member = g.loc[g["event_timestamp"] == snaps[-1], "member_id"].iloc[0]
    rows = g[g["member_id"] == member].set_index("event_timestamp")
    at = pd.Timestamp(snaps[-1]) + pd.Timedelta(minutes=1)  # after the snapshot, before it was created
    known = source.historical(pd.DataFrame({"member_id": [member], "event_timestamp": [at]}))
    late = source.historical(pd.DataFrame({"member_id": [member], "event_timestamp": [at]}), as_known=False)
    assert _shares(late, "drama") == pytest.approx(_shares(rows.loc[[snaps[-1]]], "drama"))
    assert _shares(known, "drama") == pytest.approx(_shares(rows.loc[[snaps[-2]]], "drama"))


def test_historical_matches_snapshots(data_dir: Path, source: MemberFeatureSource) -> None:
    g = pd.read_parquet(data_dir / "world" / "member_genre_affinity.parquet")
    snaps = sorted(g["event_timestamp"].unique())
    member = g.loc[g["event_timestamp"] == snaps[-1], "member_id"].iloc[0]
    mid = pd.Timestamp(snaps[-2]) + pd.Timedelta(days=3)  # between the last two snapshots
    out = source.historical(pd.DataFrame({"member_id": [member], "event_timestamp": [mid]}))
    expect = g[(g["member_id"] == member) & (g["event_timestamp"] == snaps[-2])]
    assert list(out["genres"].iloc[0]) == list(expect["genres"].iloc[0])
    for genre in expect["genres"].iloc[0]:
        assert _shares(out, genre) == pytest.approx(_shares(expect, genre))
    assert "watched_titles" in out.columns and "country" in out.columns


def test_catalog_loads(data_dir: Path) -> None:
    world = load_world(data_dir / "world")
    cat = load_catalog(data_dir / "world")
    assert len(cat.titles) == 20 and len(cat.images) == len(world.images)
    assert cat.version
    for t in cat.titles.values():
        assert t.default_image_id in t.image_ids
        assert world.params.pool_min <= len(t.image_ids) <= world.params.pool_max
        assert all(cat.images[i].title_id == t.title_id for i in t.image_ids)
        assert isinstance(t.genres, tuple) and isinstance(t.cast, tuple)
    img = next(iter(cat.images.values()))
    assert "clickbait" not in {f.name for f in dataclasses.fields(img)}
    assert not hasattr(img, "clickbait")
    assert isinstance(img.cast_shown, tuple) and isinstance(img.theme_tags, tuple)


def test_historical_rows_convert_to_member_features(source: MemberFeatureSource) -> None:
    from keyart.adapters.feast.online import row_to_member_features

    t = T1 + pd.Timedelta(days=1)
    out = source.historical(pd.DataFrame({
        "member_id": ["m00001", "nobody", PIT_MEMBER], "event_timestamp": [t, t, t], "label": [1, 0, 1],
    }))
    rows = out.to_dict("records")
    known = row_to_member_features("m00001", rows[0])
    assert known is not None and set(known.genre_affinity) <= set(GENRES) and known.country
    assert row_to_member_features("nobody", rows[1]) is None  # extra columns do not count
    pit = row_to_member_features(PIT_MEMBER, rows[2])
    assert pit is not None and pit.genre_affinity["action"] == pytest.approx(0.9)


def test_bounded_wait_fails_fast_behind_a_writers_lock(store: FeatureStore) -> None:
    """With `bound_wait`, a read blocked by a writer's lock on the SQLite online store (a
    materialization) fails after about the bound instead of waiting SQLite's default 5 s:
    that bound is what lets the page service read on the request thread."""
    import sqlite3
    import time

    source = MemberFeatureSource(store)
    assert source.bound_wait(0.05) is True
    assert source.get("m00001") is not None
    db = store.config.online_store.path
    path = Path(db) if Path(db).is_absolute() else Path(store.config.repo_path) / db
    writer = sqlite3.connect(path, timeout=0)
    try:
        writer.execute("BEGIN EXCLUSIVE")  # what a writer holds while it commits
        t0 = time.monotonic()
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            source.get("m00001")
        assert time.monotonic() - t0 < 1.0
    finally:
        writer.rollback()
        writer.close()
    assert source.get("m00001") is not None  # the lock gone, reads work again


@pytest.mark.parametrize("value", [
    {"string_val": "ab"}, {"string_val": ""}, {"bytes_val": b"\x00\x01"}, {"double_val": 0.1},
    {"double_val": float("inf")},
    {"float_val": 1.5}, {"int32_val": -3}, {"int64_val": 2**40}, {"bool_val": True}, {"bool_val": False},
    {"string_list_val": {"val": ["a", "b"]}}, {"string_list_val": {"val": []}}, {"bytes_list_val": {"val": [b"x"]}},
    {"double_list_val": {"val": [0.25, -1.0]}}, {"float_list_val": {"val": [0.5]}},
    {"int32_list_val": {"val": [1, 2]}}, {"int64_list_val": {"val": [2**40]}}, {"bool_list_val": {"val": [True]}},
    {"unix_timestamp_val": 1_700_000_000}, {"string_set_val": {"val": ["a"]}}, {},  # Feast's converter: as before
])
def test_plain_values_read_as_feast_converts_them(value: dict) -> None:
    from feast.protos.feast.types.Value_pb2 import Value as ValueProto
    from feast.type_map import feast_value_type_to_python_type

    from keyart.adapters.feast.online import python_value

    proto = ValueProto(**value)
    ours, feast = python_value(proto), feast_value_type_to_python_type(proto)
    assert ours == feast and type(ours) is type(feast)
