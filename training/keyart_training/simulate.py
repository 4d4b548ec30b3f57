"""Simulate logged decisions against the synthetic world's ground truth.

The first model needs data before any member has been served, so `make run`
bootstraps it the way a launch would: uniform-random exploration pages, logged
with propensities and member features as of decision time (point-in-time from
Feast's offline store), with outcomes drawn from the world's ground truth. The
result has the decision log's export schema, so training reads it unchanged.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Callable

import numpy as np
import pandas as pd
from tqdm import tqdm

from keyart.core.featurize import CatalogIndex, build_matrix, cold_member, feature_rows
from keyart.core.ranker import Ranker
from keyart.domain import DEVICES, FEATURE_DTYPE, FeatureRow, MemberFeatures, RequestContext, TitleRequest
from keyart.jobs.world.world_model import World

# entity rows (member_id, event_timestamp) -> member features as of each row's time
HistoricalLookup = Callable[[pd.DataFrame], list[MemberFeatures | None]]


def simulate_pages(
    world: World,
    index: CatalogIndex,
    member_features_at: HistoricalLookup,
    pages: int = 4000,
    titles_per_page: int = 10,
    days: float = 14.0,
    seed: int = 11,
    ranker: Ranker | None = None,
    progress: bool = False,
    end: datetime | None = None,
) -> pd.DataFrame:
    """Logged pages with outcomes, one row per (page, title), in the export schema.

    Without a ranker every image is chosen uniformly at random (propensity 1/n).
    Decisions fall in the `days` before `end` (default: the world's now). Besides the
    export columns, rows carry the member's actor affinities (`top_actors`,
    `top_actor_weights`) so offline evaluation can rebuild every candidate's features.
    """
    rng = np.random.default_rng(seed)
    members = world.members
    m_idx, when = _draw_pages(rng, world, pages, days, end)
    entity = pd.DataFrame(
        {"member_id": members["member_id"].to_numpy()[m_idx], "event_timestamp": pd.to_datetime(when, utc=True)}
    )
    feats = member_features_at(entity)
    title_ids = np.array(sorted(index.catalog.titles))
    # The ranker featurizes in its model's space, uniform pages in the catalog index's.
    schema = (ranker.index if ranker is not None else index).space.schema_id
    rows: list[dict] = []
    for k in tqdm(range(pages), desc="simulating pages", disable=not progress):
        m = members.iloc[m_idx[k]]
        device = m["main_device"] if rng.random() < 0.7 else DEVICES[rng.integers(len(DEVICES))]
        ctx = RequestContext(
            country=m["country"], language=m["language"], device=device, surface="home", client_time=when[k]
        )
        member = feats[k] or cold_member(m["member_id"], ctx)
        page = rng.choice(title_ids, size=min(titles_per_page, len(title_ids)), replace=False)
        if ranker is not None:
            policy, sels = ranker.rank(member, ctx, [TitleRequest(t) for t in page], when[k])
            chosen: list = [(s.title_id, s.image_id, s.propensity, s.score, s.features) for s in sels if s.features]
        else:
            policy, chosen = "uniform", _uniform_page(index, member, ctx, list(page), rng)
        actors = list(member.actor_affinity)
        weights = np.array([member.actor_affinity[a] for a in actors], dtype=np.float32)
        for pos, (title_id, image_id, propensity, score, x) in enumerate(chosen):
            rows.append(
                {
                    "decision_id": f"sim-{seed}-{k}-{pos}",
                    "request_id": f"sim-{seed}-{k}",
                    "member_id": member.member_id,
                    "title_id": title_id,
                    "image_id": image_id,
                    "propensity": propensity,
                    "score": score,
                    "policy": policy,
                    "position": pos,
                    "country": ctx.country,
                    "device": device,
                    "decided_at": when[k],
                    "feature_schema": schema,
                    "features": np.frombuffer(x, dtype=FEATURE_DTYPE).copy(),
                    "fallback_reason": "",
                    "top_actors": actors,
                    "top_actor_weights": weights,
                }
            )
    df = pd.DataFrame(rows)
    played, minutes = world.sample_outcomes(
        df["member_id"].to_numpy(), df["image_id"].to_numpy(), df["device"].to_numpy(), rng
    )
    df["played"] = played
    df["max_minutes"] = minutes
    df["decided_at"] = pd.to_datetime(df["decided_at"], utc=True)
    return df


def _draw_pages(
    rng: np.random.Generator, world: World, pages: int, days: float, end: datetime | None
) -> tuple[np.ndarray, list[datetime]]:
    """Member row and decision time of each page (the first draws of `simulate_pages`)."""
    m_idx = rng.integers(0, len(world.members), size=pages)
    offsets = rng.uniform(0.0, days * 86400.0, size=pages)
    end = end or world.now
    return m_idx, [end - timedelta(seconds=float(s)) for s in offsets]


def planned_entities(world: World, pages: int, days: float, seed: int, end: datetime | None = None) -> pd.DataFrame:
    """The (member_id, event_timestamp) rows `simulate_pages` will look up for these arguments."""
    m_idx, when = _draw_pages(np.random.default_rng(seed), world, pages, days, end)
    return pd.DataFrame({"member_id": world.members["member_id"].to_numpy()[m_idx],
                         "event_timestamp": pd.to_datetime(when, utc=True)})


class CachedLookup:
    """A historical lookup answered from one prefetched batch (Feast's offline store has a
    large fixed cost per call); rows not prefetched go to the wrapped lookup."""

    def __init__(self, inner: HistoricalLookup) -> None:
        self.inner = inner
        self.cache: dict[tuple[str, pd.Timestamp], MemberFeatures | None] = {}

    @staticmethod
    def _keys(entity: pd.DataFrame) -> list[tuple[str, pd.Timestamp]]:
        ts = pd.to_datetime(entity["event_timestamp"], utc=True)
        return list(zip(entity["member_id"].astype(str), ts))

    def prefetch(self, entity: pd.DataFrame) -> None:
        keys = self._keys(entity)
        for key, value in zip(keys, self.inner(entity.reset_index(drop=True))):
            self.cache[key] = value

    def __call__(self, entity: pd.DataFrame) -> list[MemberFeatures | None]:
        keys = self._keys(entity)
        missing = [i for i, k in enumerate(keys) if k not in self.cache]
        if missing:
            self.prefetch(entity.iloc[missing])
        return [self.cache[k] for k in keys]


def _uniform_page(
    index: CatalogIndex,
    member: MemberFeatures,
    ctx: RequestContext,
    page: list[str],
    rng: np.random.Generator,
) -> list[tuple[str, str, float, float, FeatureRow]]:
    catalog = index.catalog
    picks = []
    for title_id in page:
        pool = catalog.pool(title_id)
        picks.append((title_id, pool[rng.integers(len(pool))], 1.0 / len(pool)))
    rows = np.array([index.image_row[i] for _, i, _ in picks], dtype=np.int64)
    x = feature_rows(build_matrix(index, member, ctx, page, rows, np.arange(len(page))))
    return [(t, i, p, 0.0, x[j]) for j, (t, i, p) in enumerate(picks)]
