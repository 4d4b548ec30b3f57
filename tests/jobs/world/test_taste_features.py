"""The taste the viewing history carries: views count by how much of the title they
covered, and an actor's affinity is the member's excess exposure over the population's
(a fan of a niche actor stands out; a star everyone watches does not)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

from keyart.jobs.world.features import derive_features
from keyart.jobs.world.params import WorldParams
from keyart.jobs.world.world_model import World

NOW = datetime(2026, 11, 20, tzinfo=UTC)


def _world(views: list[tuple[str, str, float]], titles: pd.DataFrame) -> World:
    member_ids = sorted({m for m, _, _ in views})
    members = pd.DataFrame({"member_id": member_ids, "country": "US", "language": "en", "main_device": "TV",
                            "tenure_days": 400.0})
    viewing = pd.DataFrame({
        "member_id": [m for m, _, _ in views],
        "title_id": [t for _, t, _ in views],
        "event_timestamp": pd.DatetimeIndex([NOW - timedelta(days=1 + k % 30) for k in range(len(views))]),
        "minutes_watched": [mins for _, _, mins in views],
    })
    return World(members=members, titles=titles, images=pd.DataFrame({"image_id": []}), viewing=viewing,
                 params=WorldParams(history_days=60), now=NOW)


def _latest(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["event_timestamp"] == df["event_timestamp"].max()].set_index("member_id")


def test_a_fan_of_a_niche_actor_stands_out_and_a_star_in_every_title_does_not() -> None:
    titles = pd.DataFrame({
        "title_id": [f"t{k}" for k in range(10)],
        "genres": [["drama"]] * 10,
        "cast": [["star", "niche"] if k == 0 else ["star", f"extra{k}"] for k in range(10)],
        "runtime_minutes": 100.0,
    })
    rng = np.random.default_rng(3)
    views = [(f"m{j:02d}", f"t{rng.integers(1, 10)}", 90.0) for j in range(30) for _ in range(6)]
    views += [("fan", "t0", 90.0)] * 3 + [("fan", "t1", 90.0), ("fan", "t2", 90.0)]
    views += [("once", "t0", 90.0)] + [("once", f"t{k}", 90.0) for k in range(3, 8)]
    actors = _latest(derive_features(_world(views, titles))["member_actor_affinity"])
    fan = dict(zip(actors.loc["fan", "top_actors"], actors.loc["fan", "top_actor_weights"]))
    once = dict(zip(actors.loc["once", "top_actors"], actors.loc["once", "top_actor_weights"]))
    assert max(fan, key=fan.__getitem__) == "niche"
    assert fan["niche"] > once["niche"] > 0  # three views of the title are more evidence than one
    assert all("star" not in a for a in actors["top_actors"])  # in every title: no one watches it more


def test_genre_shares_count_views_by_how_much_of_the_title_they_covered() -> None:
    titles = pd.DataFrame({"title_id": ["short_drama", "long_comedy"], "genres": [["drama"], ["comedy"]],
                           "cast": [["a"], ["b"]], "runtime_minutes": [45.0, 180.0]})
    # Drama watched to the end three times; the comedy abandoned three times after 60 minutes.
    views = [("m", "short_drama", 45.0)] * 3 + [("m", "long_comedy", 60.0)] * 3
    views += [(f"p{k}", t, 40.0) for k in range(20) for t in ("short_drama", "long_comedy")]
    genres = _latest(derive_features(_world(views, titles))["member_genre_affinity"])
    share = dict(zip(genres.loc["m", "genres"], genres.loc["m", "genre_weights"]))
    assert share["drama"] > share["comedy"]  # by minutes alone the comedy (180 minutes) would lead
