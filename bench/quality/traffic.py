"""Decision traffic drawn from a world: pages of titles for members in a context.

A page is one RankArtwork request: a member (active members browse more), the
device of the session (the member's main device in ``main_device_share`` of
sessions), the country (the member's, 3 % travelling), a client time spread over
several days with an evening peak, and 6 to 14 titles drawn by popularity and the
member's genre taste (rows of a home page are personalized in real life too).
Held-out decisions are fresh draws of the same process on the following days,
without any (member, title) pair of the logged traffic.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import pandas as pd

from quality.world_base import SyntheticWorld

# Share of sessions by hour of day (UTC stands in for local time): low at night, evening peak.
_HOURS = np.array([2, 1, 1, 1, 1, 1, 2, 3, 3, 3, 3, 4, 4, 4, 4, 4, 5, 6, 8, 9, 9, 8, 6, 4], dtype=float)


@dataclass
class Pages:
    """Pages in time order; decisions are (page, title) pairs, flattened in ``decisions``."""

    member: np.ndarray
    device: np.ndarray
    country: np.ndarray
    client_time: pd.DatetimeIndex
    titles: list[np.ndarray]

    def __len__(self) -> int:
        return len(self.member)

    @property
    def n_decisions(self) -> int:
        return int(sum(len(t) for t in self.titles))

    def decisions(self) -> pd.DataFrame:
        """One row per decision: page, position, member, title, device, country, client_time."""
        sizes = np.array([len(t) for t in self.titles])
        page = np.repeat(np.arange(len(self)), sizes)
        return pd.DataFrame({
            "page": page,
            "position": np.concatenate([np.arange(s) for s in sizes]) if len(sizes) else [],
            "member": self.member[page],
            "title": np.concatenate(self.titles) if len(sizes) else np.array([], dtype=np.int64),
            "device": self.device[page],
            "country": self.country[page],
            "client_time": self.client_time[page],
        })

    def subset(self, keep: list[np.ndarray]) -> Pages:
        """The same pages with only the kept titles (pages left empty are dropped)."""
        idx = [k for k, t in enumerate(keep) if len(t)]
        return Pages(self.member[idx], self.device[idx], self.country[idx], self.client_time[idx],
                     [keep[k] for k in idx])


def draw_pages(world: SyntheticWorld, seed: int, n_decisions: int, start: datetime, days: float) -> Pages:
    """Pages holding exactly ``n_decisions`` decisions, client times in [start, start + days)."""
    rng = np.random.default_rng(seed)
    n_pages = int(n_decisions / 10 * 1.2) + 2
    w = world.m_activity / world.m_activity.sum()
    member = rng.choice(world.n_members, n_pages, p=w)
    main = world.m_device[member]
    other = rng.choice(4, n_pages, p=world.main_device_p)
    device = np.where(rng.random(n_pages) < world.main_device_share, main, other)
    country = np.where(rng.random(n_pages) < 0.97, world.m_country[member], rng.integers(10, size=n_pages))
    day = rng.integers(0, max(1, int(np.ceil(days))), n_pages)
    hour = rng.choice(24, n_pages, p=_HOURS / _HOURS.sum())
    seconds = day * 86400 + hour * 3600 + rng.integers(0, 3600, n_pages)
    order = np.argsort(seconds, kind="stable")
    member, device, country, seconds = member[order], device[order], country[order], seconds[order]
    log_pop = np.log(world.t_pop)
    titles: list[np.ndarray] = []
    total = 0
    for k in range(n_pages):
        size = min(int(rng.integers(6, 15)), world.n_titles, n_decisions - total)
        if size <= 0:
            break
        score = log_pop + 3.0 * (world.m_taste[member[k]] @ world.t_genre.T) + rng.gumbel(size=world.n_titles)
        titles.append(np.argsort(-score)[:size])
        total += size
    if total < n_decisions:
        raise ValueError(f"drew {total} decisions, wanted {n_decisions}: raise the page count")
    n = len(titles)
    when = pd.DatetimeIndex(pd.Timestamp(start) + pd.to_timedelta(seconds[:n], unit="s"))
    return Pages(member[:n], device[:n], country[:n], when, titles)


def draw_heldout(world: SyntheticWorld, seed: int, n_decisions: int, start: datetime, days: float,
                 logged_pairs: set[tuple[int, int]]) -> Pages:
    """Fresh pages on the days after the log, keeping only (member, title) pairs never logged."""
    pages = draw_pages(world, seed, int(n_decisions * 1.5) + 50, start + timedelta(days=days), 2.0)
    keep, total = [], 0
    for m, ts in zip(pages.member, pages.titles):
        kept = np.array([t for t in ts if (int(m), int(t)) not in logged_pairs], dtype=np.int64)
        kept = kept[: max(0, n_decisions - total)]
        total += len(kept)
        keep.append(kept)
    if total < n_decisions:
        raise ValueError(f"only {total} fresh held-out decisions, wanted {n_decisions}")
    return pages.subset(keep)
