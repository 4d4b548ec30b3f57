"""Synthetic world: determinism, catalog shape, ground-truth effects, feature snapshots."""

from __future__ import annotations

import dataclasses
import json
import re
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from keyart.domain import ImageInfo
from keyart.jobs.world.features import (
    HISTORY_COLUMNS,
    TOP_ACTORS,
    derive_features,
    snapshot_times,
)
from keyart.jobs.world.params import WorldParams
from keyart.jobs.world.synthetic import build_world
from keyart.jobs.world.vocab import GENRES
from keyart.jobs.world.world_model import World, load_world

NOW = datetime(2026, 1, 1, tzinfo=UTC)
N_MEMBERS, N_TITLES = 200, 20


@pytest.fixture(scope="module")
def world_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_world(tmp_path_factory.mktemp("world"), seed=7, members=N_MEMBERS, titles=N_TITLES, now=NOW)


@pytest.fixture(scope="module")
def world(world_dir: Path) -> World:
    return load_world(world_dir)


def _logit(p: np.ndarray) -> np.ndarray:
    return np.log(p / (1 - p))


def _with_images(world: World, rows: list[dict]) -> World:
    """A copy of the world with extra (counterfactual) images appended."""
    images = pd.concat([world.images, pd.DataFrame(rows)], ignore_index=True)
    return World(world.members, world.titles, images, world.viewing, world.params, world.now, world.seed)


def _variant(world: World, base: dict, image_id: str, **changes: object) -> dict:
    row = dict(base)
    row.update(image_id=image_id, **changes)
    return row


@pytest.fixture(scope="module")
def base_image(world: World) -> dict:
    """A one-face neutral closeup, no villain, no clickbait, of a title with a villain."""
    t = world.titles[world.titles["villain_actor"].notna()].iloc[0]
    row = world.images[world.images["title_id"] == t["title_id"]].iloc[0].to_dict()
    row.update(
        num_faces=1, face_area=0.3, expression="neutral", villain_shown=False, cast_shown=[t["cast"][0]],
        group_size=1, style="closeup", clickbait=False, text_present=False, brightness=0.5, warmth=0.0,
    )
    return row


# ------------------------------------------------------------------------- files


def test_files_and_sizes(world_dir: Path, world: World) -> None:
    for name in ("members", "titles", "images", "viewing"):
        assert (world_dir / f"{name}.parquet").exists()
    meta = json.loads((world_dir / "world.json").read_text())
    assert meta["seed"] == 7
    assert meta["sizes"]["members"] == N_MEMBERS and meta["sizes"]["titles"] == N_TITLES
    assert datetime.fromisoformat(meta["now"]) == NOW
    assert WorldParams(**meta["params"]) == WorldParams()
    assert len(world.members) == N_MEMBERS and len(world.titles) == N_TITLES


def test_id_formats_and_columns(world: World) -> None:
    assert world.members["member_id"].str.fullmatch(r"m\d{5}").all()
    assert world.titles["title_id"].str.fullmatch(r"t\d{4}").all()
    assert world.images["image_id"].str.fullmatch(r"i\d{6}").all()
    assert all(re.fullmatch(r"a\d{4}", a) for c in world.titles["cast"] for a in c)
    for f in dataclasses.fields(ImageInfo):
        assert f.name in world.images.columns or f.name == "attributes"  # a customer's own: none here
    assert "clickbait" in world.images.columns
    assert {c for c in world.members.columns if c.startswith("latent_")} >= {
        "latent_genre_weights", "latent_favourite_actors"
    }
    v = world.viewing
    assert str(v["event_timestamp"].dt.tz) == "UTC"
    assert v["event_timestamp"].max() <= pd.Timestamp(NOW)
    assert v["event_timestamp"].min() >= pd.Timestamp(NOW) - pd.Timedelta(days=world.params.history_days)


def test_titles_shape(world: World) -> None:
    for t in world.titles.itertuples():
        assert 1 <= len(t.genres) <= 3 and set(t.genres) <= set(GENRES)
        assert 4 <= len(t.cast) <= 8
        assert t.villain_actor is None or t.villain_actor in t.cast


def test_determinism(tmp_path: Path, world_dir: Path) -> None:
    again = build_world(tmp_path / "a", seed=7, members=N_MEMBERS, titles=N_TITLES, now=NOW)
    for name in ("members", "titles", "images", "viewing"):
        pd.testing.assert_frame_equal(
            pd.read_parquet(world_dir / f"{name}.parquet"), pd.read_parquet(again / f"{name}.parquet")
        )
    assert (world_dir / "world.json").read_text() == (again / "world.json").read_text()
    other = build_world(tmp_path / "b", seed=8, members=N_MEMBERS, titles=N_TITLES, now=NOW)
    assert not pd.read_parquet(world_dir / "images.parquet").equals(pd.read_parquet(other / "images.parquet"))


def test_pool_sizes_lineage_and_default(world: World) -> None:
    p = world.params
    sizes = world.images.groupby("title_id").size()
    assert set(sizes.index) == set(world.titles["title_id"])
    assert sizes.between(p.pool_min, p.pool_max).all()
    # Some images are variants sharing a lineage, but never across titles.
    per_lineage = world.images.groupby("lineage_id")["title_id"].agg(["size", "nunique"])
    assert (per_lineage["size"] > 1).any()
    assert (per_lineage["nunique"] == 1).all()
    # The default image is in the title's pool and is the best averaged over members.
    mean_q = world.mean_quality_by_image()
    for t in world.titles.itertuples():
        pool = world.images.loc[world.images["title_id"] == t.title_id, "image_id"]
        assert t.default_image_id in set(pool)
        assert mean_q[t.default_image_id] == pytest.approx(mean_q[pool].max())


def test_large_pools_configurable(tmp_path: Path) -> None:
    params = WorldParams(pool_min=20, pool_max=30)
    w = load_world(build_world(tmp_path, seed=1, members=20, titles=5, params=params, now=NOW))
    assert w.images.groupby("title_id").size().between(20, 30).all()


# ------------------------------------------------------------------ ground truth


def _members(world: World) -> np.ndarray:
    return world.members["member_id"].to_numpy()


def test_complex_face_beats_neutral_and_happy(world: World, base_image: dict) -> None:
    w = _with_images(world, [
        _variant(world, base_image, "x_neutral"),
        _variant(world, base_image, "x_happy", expression="happy"),
        _variant(world, base_image, "x_complex", expression="complex"),
        _variant(world, base_image, "x_noface", num_faces=0, face_area=0.0, expression="none",
                 group_size=0, cast_shown=[]),
    ])
    m = _members(w)
    dev = np.full(len(m), "TV")
    q = {k: w.quality_play_prob(m, np.full(len(m), f"x_{k}"), dev) for k in ("neutral", "happy", "complex", "noface")}
    assert (q["complex"] > q["neutral"]).all()
    assert (q["complex"] > q["happy"]).all()
    assert (q["happy"] > q["neutral"]).all()
    assert (q["neutral"] > q["noface"]).all()


def test_villain_helps(world: World, base_image: dict) -> None:
    t = world.titles.set_index("title_id").loc[base_image["title_id"]]
    # Same people on both (so favourite-actor effects cancel); only the villain flag differs.
    w = _with_images(world, [
        _variant(world, base_image, "x_plain", cast_shown=[t["villain_actor"]]),
        _variant(world, base_image, "x_villain", villain_shown=True, cast_shown=[t["villain_actor"]]),
    ])
    m = _members(w)
    dev = np.full(len(m), "WEB")
    assert (w.quality_play_prob(m, np.full(len(m), "x_villain"), dev)
            > w.quality_play_prob(m, np.full(len(m), "x_plain"), dev)).all()


def test_crowd_penalty_larger_on_mobile(world: World, base_image: dict) -> None:
    t = world.titles.set_index("title_id").loc[base_image["title_id"]]
    w = _with_images(world, [
        _variant(world, base_image, "x_duo", group_size=2, num_faces=2, cast_shown=list(t["cast"][:2]),
                 style="character"),
        _variant(world, base_image, "x_crowd", group_size=6, num_faces=6, cast_shown=list(t["cast"][:2]),
                 style="character"),
    ])
    m = _members(w)
    drop = {}
    for dev in ("TV", "MOBILE", "TABLET"):
        d = np.full(len(m), dev)
        duo = w.quality_play_prob(m, np.full(len(m), "x_duo"), d)
        crowd = w.quality_play_prob(m, np.full(len(m), "x_crowd"), d)
        assert (crowd < duo).all()
        drop[dev] = _logit(duo) - _logit(crowd)
    assert (drop["MOBILE"] > drop["TV"] + 1e-9).all()
    assert (drop["TABLET"] > drop["TV"] + 1e-9).all()


def test_clickbait_raises_starts_not_quality(world: World, base_image: dict) -> None:
    w = _with_images(world, [
        _variant(world, base_image, "x_honest"),
        _variant(world, base_image, "x_bait", clickbait=True),
    ])
    m = _members(w)
    d = np.full(len(m), "TV")
    honest, bait = np.full(len(m), "x_honest"), np.full(len(m), "x_bait")
    assert (w.play_start_prob(m, bait, d) > w.play_start_prob(m, honest, d)).all()
    assert (w.quality_play_prob(m, bait, d) <= w.quality_play_prob(m, honest, d)).all()
    assert (w.play_start_prob(m, honest, d) >= w.quality_play_prob(m, honest, d)).all()


def test_tone_matches_latent_taste(world: World, base_image: dict) -> None:
    taste = np.vstack(world.members["latent_genre_weights"].to_numpy())
    rows = [_variant(world, base_image, f"x_tone_{g}", tone=g) for g in GENRES]
    w = _with_images(world, rows)
    m = _members(w)
    d = np.full(len(m), "TV")
    top = np.array([f"x_tone_{GENRES[i]}" for i in taste.argmax(axis=1)])
    bottom = np.array([f"x_tone_{GENRES[i]}" for i in taste.argmin(axis=1)])
    assert (w.quality_play_prob(m, top, d) > w.quality_play_prob(m, bottom, d)).all()


def test_favourite_actor_helps(world: World, base_image: dict) -> None:
    members = world.members
    fav = members["latent_favourite_actors"].map(lambda f: f[0] if len(f) else None)
    not_fav = members["latent_favourite_actors"].map(lambda f: next(
        a for a in world.titles.iloc[0]["cast"] + ["a9999"] if a not in f))
    rows = []
    for i, (a, b) in enumerate(zip(fav, not_fav)):
        rows.append(_variant(world, base_image, f"x_fav_{i}", cast_shown=[a]))
        rows.append(_variant(world, base_image, f"x_oth_{i}", cast_shown=[b]))
    w = _with_images(world, rows)
    m = _members(w)
    d = np.full(len(m), "WEB")
    with_fav = w.quality_play_prob(m, np.array([f"x_fav_{i}" for i in range(len(m))]), d)
    without = w.quality_play_prob(m, np.array([f"x_oth_{i}" for i in range(len(m))]), d)
    assert (with_fav > without).all()


def test_country_preferences(world: World, base_image: dict) -> None:
    w = _with_images(world, [
        _variant(world, base_image, "x_card", style="title_card", brightness=0.8),
        _variant(world, base_image, "x_close", style="closeup", brightness=0.4),
        _variant(world, base_image, "x_warm", warmth=0.8),
        _variant(world, base_image, "x_cool", warmth=-0.8),
    ])
    m = _members(w)[:1].repeat(2)
    d = np.array(["TV", "TV"])
    c = np.array(["JP", "US"])
    card = _logit(w.quality_play_prob(m, np.full(2, "x_card"), d, c))
    close = _logit(w.quality_play_prob(m, np.full(2, "x_close"), d, c))
    assert card[0] - close[0] > card[1] - close[1]  # JP likes bright title cards more than US
    c = np.array(["BR", "US"])
    warm = _logit(w.quality_play_prob(m, np.full(2, "x_warm"), d, c))
    cool = _logit(w.quality_play_prob(m, np.full(2, "x_cool"), d, c))
    assert warm[0] - cool[0] > warm[1] - cool[1] + 0.1


def test_known_title_dampens_artwork(world: World, base_image: dict) -> None:
    w = _with_images(world, [
        _variant(world, base_image, "x_neutral"),
        _variant(world, base_image, "x_complex", expression="complex"),
    ])
    m = _members(w)
    d = np.full(len(m), "TV")
    lift = _logit(w.quality_play_prob(m, np.full(len(m), "x_complex"), d)) - _logit(
        w.quality_play_prob(m, np.full(len(m), "x_neutral"), d))
    knows = np.isin(m, world.viewing.loc[world.viewing["title_id"] == base_image["title_id"], "member_id"])
    assert knows.any() and (~knows).any()
    assert lift[knows].max() < lift[~knows].min()


def test_sample_outcomes(world: World) -> None:
    rng = np.random.default_rng(0)
    n = 20_000
    m = rng.choice(_members(world), n)
    i = rng.choice(world.images["image_id"].to_numpy(), n)
    d = rng.choice(np.array(["TV", "MOBILE"]), n)
    played, minutes = world.sample_outcomes(m, i, d, rng)
    thr = world.params.quality_minutes
    assert played.dtype == bool and minutes.shape == (n,)
    assert (minutes[~played] == 0).all() and (minutes[played] > 0).all()
    quality = minutes >= thr
    assert abs(quality.mean() - world.quality_play_prob(m, i, d).mean()) < 0.01
    assert abs(played.mean() - world.play_start_prob(m, i, d).mean()) < 0.015
    with pytest.raises(KeyError):
        world.quality_play_prob(np.array(["m99999"]), i[:1], d[:1])


# ---------------------------------------------------------------------- features


@pytest.fixture(scope="module")
def features(world: World) -> dict[str, pd.DataFrame]:
    return derive_features(world)


def test_feature_tables(world: World, features: dict[str, pd.DataFrame]) -> None:
    g = features["member_genre_affinity"]
    assert list(g.columns[1:-2]) == ["genres", "genre_weights", *HISTORY_COLUMNS]
    catalog_genres = sorted({x for gs in world.titles["genres"] for x in gs})
    assert all(list(gs) == catalog_genres for gs in g["genres"])  # the catalog's own vocabulary
    shares = np.stack(g["genre_weights"].map(np.asarray).to_numpy())
    assert np.allclose(shares.sum(axis=1), 1.0)
    assert (shares > 0).all()  # shrunk to the population: no genre is ruled out
    assert (g["history_views"] >= 1).all() and (g["history_minutes"] > 0).all()
    for name, df in features.items():
        assert str(df["event_timestamp"].dt.tz) == "UTC" and str(df["created"].dt.tz) == "UTC", name
    assert not any("clickbait" in df.columns for df in features.values())
    assert not any(c.startswith("latent_") for df in features.values() for c in df.columns)
    snaps = snapshot_times(world.now, world.params.history_days)
    assert g["event_timestamp"].nunique() == len(snaps) > 20
    assert g["event_timestamp"].max() == pd.Timestamp(world.now)
    a = features["member_actor_affinity"]
    assert all(0 < x < np.inf for ws in a["top_actor_weights"] for x in ws)  # only actors watched above the mix
    assert all(len(x) == len(y) <= TOP_ACTORS for x, y in zip(a["top_actors"], a["top_actor_weights"]))
    assert max(len(x) for x in a["top_actors"]) > 5


def test_snapshots_never_use_future_viewing(world: World, features: dict[str, pd.DataFrame]) -> None:
    snaps = snapshot_times(world.now, world.params.history_days)
    cut = snaps[len(snaps) // 2]
    past = World(world.members, world.titles, world.images,
                 world.viewing[world.viewing["event_timestamp"] <= cut].reset_index(drop=True),
                 world.params, world.now, world.seed)
    truncated = derive_features(past)
    for name in ("member_genre_affinity", "member_actor_affinity", "member_title_interaction"):
        full = features[name]
        a = full[full["event_timestamp"] <= cut].reset_index(drop=True)
        b = truncated[name][truncated[name]["event_timestamp"] <= cut].reset_index(drop=True)
        pd.testing.assert_frame_equal(a, b, check_exact=False)
    # And the watched titles at a snapshot are exactly the viewing before it.
    inter = features["member_title_interaction"]
    row = inter[inter["event_timestamp"] == cut].iloc[0]
    v = world.viewing
    expect = set(v.loc[(v["member_id"] == row["member_id"]) & (v["event_timestamp"] <= cut), "title_id"])
    assert set(row["watched_titles"]) == expect
