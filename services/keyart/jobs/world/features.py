"""Derive the feature tables (the Feast offline sources) from a world's viewing history.

Member tables are point-in-time snapshots taken every `snapshot_every_days` days,
ending at the world's `now`. A snapshot with event_timestamp S uses only viewing
events with event_timestamp <= S, so point-in-time retrieval never sees the future.

Every table has `event_timestamp` and `created` (tz-aware UTC). Tables are written as
parquet next to the world (same directory) unless `out_dir` says otherwise:

- member_genre_affinity.parquet: member_id, genres list<str> (every genre of the
  catalog's titles, sorted: the vocabulary is the catalog's own), genre_weights
  list<float> aligned with it (recency-weighted share of the titles watched, each view
  counted by how much of the title it covered, `minutes / runtime_minutes` capped at 1,
  half-life `half_life_days`, shrunk towards the population's share with
  GENRE_PRIOR_VIEWS average views, so a member with two views is not read as a fan of
  one genre), history_views and history_minutes (all viewing events and minutes up to
  the snapshot, unweighted)
- member_actor_affinity.parquet: member_id, top_actors list<str>, top_actor_weights
  list<float>: how much more the member watches titles featuring the actor than the
  population does, the log of (views featuring the actor + a) / (views expected at the
  population's share + a), recency-weighted, a = ACTOR_PRIOR_VIEWS; the TOP_ACTORS
  actors with the largest positive excess (stars everyone watches have little)
- member_profile.parquet: member_id, country, language, main_device, tenure_days
- member_title_interaction.parquet: member_id, watched_titles list<str>

Titles and images are not feature tables: the ranker reads them from the catalog files.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from keyart.jobs.world.world_model import World, load_world

FEATURE_TABLES: tuple[str, ...] = (
    "member_genre_affinity",
    "member_actor_affinity",
    "member_profile",
    "member_title_interaction",
)
HISTORY_COLUMNS: tuple[str, ...] = ("history_views", "history_minutes")
# Feature rows become available this long after their snapshot (pipeline delay).
CREATED_DELAY = timedelta(minutes=30)
# Measured on the bench-quality worlds (bench/quality): a 30-day half-life over a
# 180-day history threw away most of a member's evidence of taste (closure 0.22 against
# 0.31 with 90 days); taste moves over months, not weeks.
HALF_LIFE_DAYS = 90.0
# Pseudo-views of the population's genre mix added to every member's history.
GENRE_PRIOR_VIEWS = 3.0
# Actors kept per member: 5 left out most of a fan's actors behind the stars everyone watches.
TOP_ACTORS = 20
# Prior views on each actor's rate ratio (Gamma(a, a)): one view of a title is weak
# evidence of liking its cast.
ACTOR_PRIOR_VIEWS = 2.0


def snapshot_times(now: datetime, history_days: int, every_days: int = 7) -> list[pd.Timestamp]:
    """Snapshot dates from the start of the history to `now` (inclusive), oldest first."""
    end = pd.Timestamp(now).tz_convert("UTC") if pd.Timestamp(now).tzinfo else pd.Timestamp(now, tz="UTC")
    start = end - pd.Timedelta(days=history_days)
    out = []
    s = end
    while s > start:
        out.append(s)
        s = s - pd.Timedelta(days=every_days)
    return out[::-1]


def _ts_col(ts: pd.Timestamp, n: int) -> pd.Series:
    return pd.Series(pd.DatetimeIndex([ts] * n, tz="UTC") if n else pd.DatetimeIndex([], tz="UTC"))


def derive_features(
    world: World,
    snapshot_every_days: int = 7,
    half_life_days: float = HALF_LIFE_DAYS,
    top_actors: int = TOP_ACTORS,
) -> dict[str, pd.DataFrame]:
    """Compute every feature table in memory (see the module docstring)."""
    p = world.params
    members, titles, viewing = world.members, world.titles, world.viewing
    snaps = snapshot_times(world.now, p.history_days, snapshot_every_days)
    n_m = len(members)
    m_ids = members["member_id"].to_numpy()
    m_index = pd.Index(m_ids)
    t_ids = titles["title_id"].to_numpy()
    t_index = pd.Index(t_ids)

    # Title -> genre shares (a view's weight is split over the title's genres).
    genres = sorted({str(g) for gs in titles["genres"] for g in gs})
    gi = {g: k for k, g in enumerate(genres)}
    tg = np.zeros((len(titles), len(genres)))
    for i, gs in enumerate(titles["genres"]):
        for g in gs:
            tg[i, gi[g]] = 1.0 / len(gs)
    actors = sorted({a for c in titles["cast"] for a in c})
    a_index = pd.Index(actors)
    n_a = len(actors)
    # Viewing x cast, exploded once.
    v_m = m_index.get_indexer(viewing["member_id"].to_numpy())
    v_t = t_index.get_indexer(viewing["title_id"].to_numpy())
    # as_unit: asi8 below must be nanoseconds whatever unit the parquet column had.
    v_ts = pd.DatetimeIndex(viewing["event_timestamp"]).tz_convert("UTC").as_unit("ns")
    v_ns = v_ts.asi8
    v_min = viewing["minutes_watched"].to_numpy(float)
    # How much of the title each view covered: a view abandoned after minutes says less
    # of taste than one watched to the end, whatever the title's length.
    runtime = _runtimes(titles)
    v_done = np.minimum(1.0, v_min / runtime[v_t])
    cast_idx = [a_index.get_indexer(list(c)) for c in titles["cast"]]
    cast_len = np.array([len(c) for c in cast_idx])
    rep = cast_len[v_t]
    x_view = np.repeat(np.arange(len(viewing)), rep)
    x_actor = np.concatenate([cast_idx[t] for t in v_t]) if len(v_t) else np.array([], dtype=np.int64)

    tenure_now = members["tenure_days"].to_numpy(float)
    now_ts = snaps[-1]
    genre_rows, actor_rows, profile_rows, inter_rows = [], [], [], []
    for s in snaps:
        s_ns = s.value
        mask = v_ns <= s_ns
        age_days = (s_ns - v_ns[mask]) / 86_400e9
        recency = np.power(0.5, age_days / half_life_days)
        w = v_done[mask] * recency
        vm, vt = v_m[mask], v_t[mask]
        created = s + CREATED_DELAY
        # Genre affinity.
        g = np.zeros((n_m, len(genres)))
        np.add.at(g, vm, w[:, None] * tg[vt])
        tot = g.sum(axis=1)
        n_views = np.bincount(vm, minlength=n_m)
        has = n_views > 0
        population = g.sum(axis=0) / max(float(g.sum()), 1e-12)
        prior = GENRE_PRIOR_VIEWS * float(w.sum()) / max(1, len(w))  # in weighted views
        share = (g[has] + prior * population) / (tot[has, None] + prior)
        gdf = pd.DataFrame({"member_id": m_ids[has], "genres": [genres] * int(has.sum()),
                            "genre_weights": [row.tolist() for row in share]})
        gdf["history_views"] = n_views[has].astype(float)
        gdf["history_minutes"] = np.bincount(vm, weights=v_min[mask], minlength=n_m)[has]
        gdf["event_timestamp"] = s
        gdf["created"] = created
        genre_rows.append(gdf)
        # Actor affinity: the member's excess exposure to each actor over the population's.
        actor_rows.append(_actor_affinity(m_ids, has, v_m, x_view, x_actor, mask, recency, n_a, actors,
                                          top_actors, s, created))
        # Titles watched or started so far.
        pairs = pd.DataFrame({"m": vm, "t": vt}).drop_duplicates().sort_values(["m", "t"])
        watched = pairs.groupby("m")["t"].agg(lambda x: [str(t_ids[j]) for j in x])
        inter_rows.append(
            pd.DataFrame(
                {
                    "member_id": m_ids[watched.index.to_numpy()],
                    "watched_titles": watched.to_list(),
                    "event_timestamp": s,
                    "created": created,
                }
            )
        )
        # Profile of members who had joined by the snapshot.
        tenure_s = tenure_now - (now_ts - s) / pd.Timedelta(days=1)
        joined = tenure_s >= 0
        prof = members.loc[joined, ["member_id", "country", "language", "main_device"]].copy()
        prof["tenure_days"] = np.round(tenure_s[joined], 2)
        prof["event_timestamp"] = s
        prof["created"] = created
        profile_rows.append(prof)

    def _cat(parts: list[pd.DataFrame]) -> pd.DataFrame:
        df = pd.concat(parts, ignore_index=True)
        for c in ("event_timestamp", "created"):
            df[c] = pd.to_datetime(df[c], utc=True)
        return df

    return {
        "member_genre_affinity": _cat(genre_rows),
        "member_actor_affinity": _cat(actor_rows),
        "member_profile": _cat(profile_rows),
        "member_title_interaction": _cat(inter_rows),
    }


def _runtimes(titles: pd.DataFrame) -> np.ndarray:
    """Each title's runtime in minutes (100 where the catalog does not say: the import's default)."""
    if "runtime_minutes" not in titles.columns:
        return np.full(len(titles), 100.0)
    runtime = pd.to_numeric(titles["runtime_minutes"], errors="coerce").to_numpy(float)
    return np.where(np.isfinite(runtime) & (runtime > 0), runtime, 100.0)


def _actor_affinity(m_ids: np.ndarray, has: np.ndarray, v_m: np.ndarray, x_view: np.ndarray, x_actor: np.ndarray,
                    mask: np.ndarray, recency: np.ndarray, n_a: int, actors: list[str], top_actors: int,
                    snapshot: pd.Timestamp, created: pd.Timestamp) -> pd.DataFrame:
    """One snapshot's top actors per member with history, by how much more than expected
    the member watched titles featuring them: log((observed + a) / (expected + a)).

    Observed are the member's recency-weighted views whose title features the actor;
    expected are the member's views times the population's share of views featuring it.
    Every view counts whole (choosing a title is the evidence of liking its cast, finished
    or not). Stars in many titles have large shares for everyone, so the excess over the
    population, not the share, says who is a fan.
    """
    n_m = len(m_ids)
    w_full = np.zeros(len(mask))
    w_full[mask] = recency
    xmask = mask[x_view]
    codes = v_m[x_view[xmask]].astype(np.int64) * n_a + x_actor[xmask]
    exposure = np.bincount(codes, weights=w_full[x_view[xmask]], minlength=n_m * n_a).reshape(n_m, n_a)
    views = np.bincount(v_m[mask], weights=recency, minlength=n_m)
    population = exposure.sum(axis=0) / max(float(views.sum()), 1e-12)
    expected = views[:, None] * population[None, :]  # at the population's rate
    # Posterior mean of the member's rate ratio under a Gamma(a, a) prior (mean 1):
    # (observed + a) / (expected + a). A niche actor seen once is weak evidence (expected
    # near 0 gives (1 + a) / a); a star seen 10 times where 4 were expected is strong.
    lift = np.where(exposure > 0, np.log((exposure + ACTOR_PRIOR_VIEWS) / (expected + ACTOR_PRIOR_VIEWS)), 0.0)
    k = min(top_actors, n_a)
    top = np.argsort(-lift, axis=1, kind="stable")[:, :k]
    rows_m = np.nonzero(has)[0]
    return pd.DataFrame({
        "member_id": m_ids[rows_m],
        "top_actors": [[actors[j] for j in top[i] if lift[i, j] > 0] for i in rows_m],
        "top_actor_weights": [[float(lift[i, j]) for j in top[i] if lift[i, j] > 0] for i in rows_m],
        "event_timestamp": snapshot,
        "created": created,
    })


def build_features(
    world_dir: Path,
    out_dir: Path | None = None,
    snapshot_every_days: int = 7,
    half_life_days: float = HALF_LIFE_DAYS,
) -> dict[str, Path]:
    """Derive every feature table from the world in `world_dir` and write it as parquet.

    Returns table name -> written path. `out_dir` defaults to `world_dir`.
    """
    world = load_world(Path(world_dir))
    out = Path(out_dir) if out_dir is not None else Path(world_dir)
    out.mkdir(parents=True, exist_ok=True)
    tables = derive_features(world, snapshot_every_days, half_life_days)
    paths: dict[str, Path] = {}
    for name, df in tables.items():
        path = out / f"{name}.parquet"
        df.to_parquet(path, index=False)
        paths[name] = path
    return paths
