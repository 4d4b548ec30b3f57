"""True value of policies on held-out decisions, and Keyart's choice distributions.

The value of a policy is the mean over held-out decisions of
sum_image pi(image | x) * P_true(quality | x, image). Keyart's distributions come
from its in-process core with the trained model: the real ``Ranker`` (its policies,
stable draws, new-image floor, diversity) on the imported catalog and the member
features of the world's Feast online store. The ranker turns every title's choice
probabilities into a draw through ``keyart.core.policies.draw``; the harness
watches those calls to read the exact distribution, and falls back to sampling many
stability windows if a future ranker stops drawing that way.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from quality.traffic import Pages
from quality.world_base import COUNTRIES, DEVICES, LANGUAGE, SyntheticWorld

if TYPE_CHECKING:
    from keyart.core.ranker import PolicyConfig


@dataclass
class Candidates:
    """Held-out decisions flattened to one row per (decision, candidate image)."""

    decisions: pd.DataFrame  # page, position, member, title, device, country, client_time
    offsets: np.ndarray  # rows of decision d are offsets[d]:offsets[d+1]
    image: np.ndarray  # image index per row
    p_true: np.ndarray  # P_true(quality) per row

    @property
    def decision_of_row(self) -> np.ndarray:
        return np.repeat(np.arange(len(self.decisions)), np.diff(self.offsets))

    def choice_values(self, scores: np.ndarray) -> np.ndarray:
        """P_true(quality) of each decision's argmax of ``scores`` (first best on ties), per decision."""
        best = [lo + int(np.argmax(scores[lo:hi])) for lo, hi in zip(self.offsets[:-1], self.offsets[1:])]
        return self.p_true[best]

    def distribution_values(self, probs: np.ndarray) -> np.ndarray:
        """Expected P_true(quality) of each decision under choice probabilities ``probs``."""
        return np.add.reduceat(probs * self.p_true, self.offsets[:-1])

    def oracle_values(self) -> np.ndarray:
        return np.maximum.reduceat(self.p_true, self.offsets[:-1])

    def random_values(self) -> np.ndarray:
        return np.add.reduceat(self.p_true, self.offsets[:-1]) / np.diff(self.offsets)

    def value_of_choice(self, scores: np.ndarray) -> float:
        return float(self.choice_values(scores).mean())

    def value_of_distribution(self, probs: np.ndarray) -> float:
        return float(self.distribution_values(probs).mean())

    def oracle(self) -> float:
        return float(self.oracle_values().mean())

    def random(self) -> float:
        return float(self.random_values().mean())


def candidates(world: SyntheticWorld, pages: Pages) -> Candidates:
    dec = pages.decisions()
    pools = [world.pools[t] for t in dec["title"]]
    sizes = np.array([len(p) for p in pools])
    d = np.repeat(np.arange(len(dec)), sizes)
    image = np.concatenate(pools)
    p = world.p_quality(dec["member"].to_numpy()[d], image, dec["device"].to_numpy()[d],
                        dec["country"].to_numpy()[d])
    return Candidates(dec, np.concatenate([[0], np.cumsum(sizes)]), image, p)


def default_settings(data_dir: Path, feature_repo_dir: Path):
    """KeyartSettings with every default (KEYART_* of this shell ignored) on data_dir."""
    from keyart.settings import KeyartSettings

    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("KEYART_")}
    try:
        return KeyartSettings(data_dir=data_dir, feature_repo_dir=feature_repo_dir)
    finally:
        os.environ.update(saved)


class KeyartScorer:
    """Keyart's in-process core on one imported world, with one trained model."""

    def __init__(self, settings, model, exposure: dict[str, int]) -> None:
        from keyart.adapters.catalog.parquet import load_catalog
        from keyart.adapters.feast.online import MemberFeatureSource
        from keyart.adapters.feast.repo import open_store, resolve_feature_repo
        from keyart.app.runtime import policy_config
        from keyart.core.featurize import CatalogIndex

        self.settings = settings
        self.model = model
        self.index = CatalogIndex.build(load_catalog(settings.world_dir))
        self.members = MemberFeatureSource(open_store(resolve_feature_repo(settings)))
        self.base = policy_config(settings)
        self.exposure = exposure
        self.sampled: list[str] = []

    def configs(self) -> dict[str, PolicyConfig]:
        b = self.base
        return {
            "keyart_greedy": replace(b, name="greedy", uniform_explore_share=0.0),
            "keyart_default": b,
            "keyart_thompson": replace(b, name="thompson"),
            "keyart_epsilon_greedy": replace(b, name="epsilon_greedy"),
        }

    def distributions(self, world: SyntheticWorld, pages: Pages, cands: Candidates, config) -> np.ndarray:
        """Choice probability of every candidate row of ``cands`` under ``config``."""
        from keyart.core import policies
        from keyart.core.featurize import cold_member
        from keyart.core.ranker import Ranker
        from keyart.domain import RequestContext, TitleRequest

        ranker = Ranker(self.index, self.model, config, exposure=self.exposure)
        ids = [world.member_id(int(m)) for m in pages.member]
        unique = sorted(set(ids))
        feats = dict(zip(unique, self.members.get_many(unique)))
        probs = np.zeros(len(cands.image))
        image_ids = np.array([world.image_id(i) for i in cands.image], dtype=object)
        row = 0
        original = policies.draw
        for k in range(len(pages)):
            country = COUNTRIES[pages.country[k]]
            when = pages.client_time[k].to_pydatetime()
            ctx = RequestContext(country=country, language=LANGUAGE[country], device=DEVICES[pages.device[k]],
                                 surface="home", client_time=when)
            member = feats[ids[k]] or cold_member(ids[k], ctx)
            titles = [TitleRequest(world.title_id(int(t))) for t in pages.titles[k]]
            drawn: list[tuple[np.ndarray, int]] = []

            def spy(p, u, _drawn=drawn):
                i = original(p, u)
                _drawn.append((np.asarray(p, dtype=float), i))
                return i

            policies.draw = spy
            try:
                _, selections = ranker.rank(member, ctx, titles, when)
            finally:
                policies.draw = original
            dists = self._check(drawn, selections, titles)
            if dists is None:  # the ranker no longer draws through policies.draw: sample windows
                dists = self._sample(ranker, member, ctx, titles, when)
                self.sampled.append(ids[k])
            for pos, t in enumerate(titles):
                n = len(world.pools[int(pages.titles[k][pos])])
                pool = self.index.catalog.pool(t.title_id)
                assert list(pool) == list(image_ids[row:row + n]), "catalog pool order differs from the world's"
                probs[row:row + n] = dists[pos]
                row += n
        return probs

    def _check(self, drawn, selections, titles) -> list[np.ndarray] | None:
        pools = [self.index.catalog.pool(t.title_id) for t in titles]
        if len(drawn) != len(titles) or any(s.fallback_reason for s in selections):
            return None
        by_title = {s.title_id: s for s in selections}
        out = []
        for (p, i), t, pool in zip(drawn, titles, pools):
            if len(p) != len(pool) or pool[i] != by_title[t.title_id].image_id:
                return None
            out.append(p / p.sum())
        return out

    def _sample(self, ranker, member, ctx, titles, when, draws: int = 200) -> list[np.ndarray]:
        pools = [self.index.catalog.pool(t.title_id) for t in titles]
        counts = [np.zeros(len(p)) for p in pools]
        step = timedelta(hours=self.base.window_hours)
        for r in range(draws):
            _, selections = ranker.rank(member, ctx, titles, when + r * step)
            for c, pool, s in zip(counts, pools, selections):
                c[pool.index(s.image_id)] += 1
        return [c / c.sum() for c in counts]


def closure(value: float, nc: float, oracle: float) -> float:
    return (value - nc) / (oracle - nc) if oracle != nc else float("nan")


def share_of_oracle(value: float, random: float, oracle: float) -> float:
    return (value - random) / (oracle - random) if oracle != random else float("nan")


def entry(value: float, nc: float, random: float, oracle: float, **extra) -> dict:
    return {"value": round(value, 6), "closure": round(closure(value, nc, oracle), 4),
            "share_of_oracle": round(share_of_oracle(value, random, oracle), 4), **extra}


def bootstrap_closures(per_decision: dict[str, np.ndarray], nc: np.ndarray, oracle: np.ndarray, seed: int,
                       resamples: int = 2000) -> dict[str, np.ndarray]:
    """Each policy's closure on paired bootstrap resamples of the held-out decisions.

    Every resample draws the decisions once and recomputes every policy's value, the
    non-contextual bandit's and the oracle's on them, so a policy's spread is that of its
    closure itself, and the difference of two policies' samples is a paired comparison.
    It covers the held-out draw only: the randomness of the log and of training is not in it.
    """
    names = list(per_decision)
    n = len(oracle)
    if not n or not names:
        return {}
    values = np.stack([per_decision[k] for k in names] + [nc, oracle])  # (policies + 2, n)
    rng = np.random.default_rng(seed)
    means = np.empty((resamples, len(values)))
    for b in range(resamples):
        means[b] = values[:, rng.integers(0, n, n)].mean(axis=1)
    gap = means[:, -1] - means[:, -2]
    closures = (means[:, :-2] - means[:, -2:-1]) / np.where(gap == 0, np.nan, gap)[:, None]
    return {k: closures[:, j] for j, k in enumerate(names)}


def interval(samples: np.ndarray, level: float = 0.9) -> list[float]:
    """Central bootstrap percentile interval, rounded for the JSON."""
    tail = (1 - level) / 2
    return [round(float(np.nanquantile(samples, tail)), 4), round(float(np.nanquantile(samples, 1 - tail)), 4)]


def stability(log: pd.DataFrame, window_hours: float) -> dict:
    """Share of logged decisions repeating a (member, title) pair within a stability window,
    i.e. whose image was forced identical to the pair's first one by the stable draw."""
    ok = log[log["fallback_reason"].fillna("") == ""]
    t = pd.to_datetime(ok["decided_at"], utc=True)
    window = (t.astype("int64") // int(window_hours * 3600e9)).to_numpy()
    key = pd.DataFrame({"m": ok["member_id"].to_numpy(), "t": ok["title_id"].to_numpy(), "w": window,
                        "img": ok["image_id"].to_numpy(), "at": t.to_numpy()}).sort_values("at", kind="stable")
    first = key.groupby(["m", "t", "w"])["img"].transform("first")
    repeat = key.duplicated(["m", "t", "w"])
    same = repeat & (key["img"] == first)
    n = max(1, len(key))
    return {"window_hours": window_hours, "decisions": int(len(key)), "repeats": int(repeat.sum()),
            "repeat_share": round(float(repeat.sum()) / n, 4),
            "forced_identical_share": round(float(same.sum()) / n, 4),
            "pairs_repeated": int(key[repeat][["m", "t"]].drop_duplicates().shape[0])}


def keyart_values(scorer: KeyartScorer, world: SyntheticWorld, pages: Pages, cands: Candidates,
                  say: Callable[[str], None] = print) -> dict[str, tuple[np.ndarray, str]]:
    """Per-decision values of each of Keyart's policies, and the policy's name."""
    out = {}
    for name, cfg in scorer.configs().items():
        probs = scorer.distributions(world, pages, cands, cfg)
        out[name] = (cands.distribution_values(probs), cfg.name)
        say(f"  {name} ({cfg.name}): {out[name][0].mean():.4f}")
    return out
