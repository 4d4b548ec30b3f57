"""Off-policy estimators of a policy's take fraction from logged bandit feedback.

All estimators read one `BanditData` (one row per logged decision, its candidate
set in CSR layout) and, per target policy, the policy's probability of every
candidate (`probs`, flat, aligned with the candidates):

* replay (Li et al. 2011) on the uniformly explored slice (`uniform` rows): a logged
  decision counts when the target would have chosen the logged image, and its reward
  is averaged over the counted rows. Pools have different sizes, so a counted row is
  weighted by its pool size K (= 1/propensity); with one pool size this is exactly
  Li et al.'s rejection estimator, and for stochastic targets a row counts with
  weight pi(a|x) (the "soft" replay). Equivalently: self-normalized IPS on the slice.
* IPS: mean of w * r, w = pi(a|x) / p(a|x) (optionally clipped at `clip`).
* SNIPS: sum(w r) / sum(w).
* DR: mean of DM(x) + w (r - rhat(x, a)), DM(x) = sum_a pi(a|x) rhat(x, a).
* DM (direct method): mean of DM(x); only as good as the reward model.
* SNDR: mean of DM(x) + sum(w (r - rhat)) / sum(w) (self-normalized correction).
* Switch-DR (Wang et al. 2017): DM(x) + 1[w <= tau] w (r - rhat): rows whose weight
  exceeds `switch_tau` keep only the model's term, trading a little bias for variance.
The last three follow Open Bandit Pipeline's DirectMethod, SelfNormalizedDoublyRobust
and SwitchDoublyRobust.

Intervals are percentile bootstrap intervals; resamples are Poisson(1) weights of
members (of rows when the data has no member_id): a member's decisions are
correlated (same tastes, the same stable draw for a title within a day), so they are
resampled together. The weights are shared by every policy and estimator of one
evaluation, so differences between policies (lifts) are paired. The effective sample size is (sum w)^2 / sum w^2 over
the rows the estimator uses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np
import pandas as pd

ESTIMATORS: tuple[str, ...] = ("replay", "ips", "snips", "dr", "dm", "sndr", "switch_dr")
SWITCH_TAU = 20.0  # weights above this keep only DM's term in switch_dr


@dataclass
class BanditData:
    """Logged bandit feedback with candidate sets.

    Attributes:
        reward: shape (n,), observed reward (1.0 = quality play).
        propensity: shape (n,), logging policy's probability of the logged action, (0, 1].
        offsets: shape (n + 1,), candidates of row i are flat positions offsets[i]:offsets[i+1].
        logged: shape (n,), flat position of the logged action.
        candidates: shape (offsets[-1],), action ids of the candidates.
        uniform: shape (n,), rows logged by uniform exploration (the replay slice).
        groups: n rows of breakdown columns (country, device, ...).
        x: optional flat candidate features, shape (offsets[-1], d), for reward models.
        time: optional shape (n,) decision times.
        notes: approximations made while building the data.
        x_in: optional; another feature space -> the candidate features laid out in it
            (a model trained on another catalog's space scores the same candidates).
    """

    reward: np.ndarray
    propensity: np.ndarray
    offsets: np.ndarray
    logged: np.ndarray
    candidates: np.ndarray
    uniform: np.ndarray
    groups: pd.DataFrame = field(default_factory=pd.DataFrame)
    x: np.ndarray | None = None
    time: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)
    x_in: Callable[[Any], np.ndarray] | None = None

    @property
    def n(self) -> int:
        return len(self.reward)

    @property
    def sizes(self) -> np.ndarray:
        return np.diff(self.offsets)

    @property
    def segment(self) -> np.ndarray:
        """Row of each flat candidate, shape (offsets[-1],)."""
        return np.repeat(np.arange(self.n), self.sizes)

    def subset(self, rows: np.ndarray) -> "BanditData":
        """Rows `rows` (indices), with their candidates."""
        rows = np.asarray(rows, dtype=np.int64)
        sizes = self.sizes[rows]
        flat = np.concatenate([np.arange(self.offsets[r], self.offsets[r + 1]) for r in rows]) if len(
            rows) else np.zeros(0, np.int64)
        offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        logged = offsets[:-1] + (self.logged[rows] - self.offsets[rows])
        return BanditData(
            reward=self.reward[rows], propensity=self.propensity[rows], offsets=offsets, logged=logged,
            candidates=self.candidates[flat], uniform=self.uniform[rows],
            groups=self.groups.iloc[rows].reset_index(drop=True) if len(self.groups) else self.groups,
            x=None if self.x is None else self.x[flat], time=None if self.time is None else self.time[rows],
            notes=list(self.notes),
        )


# ----------------------------------------------------------------------------- policies


def segment_sum(values: np.ndarray, data: BanditData) -> np.ndarray:
    """Per-row sums of a flat array, shape (n,)."""
    return np.bincount(data.segment, weights=values, minlength=data.n)


def uniform_probs(data: BanditData) -> np.ndarray:
    """Flat probabilities of the uniform-random policy."""
    return np.repeat(1.0 / data.sizes, data.sizes)


def argmax_probs(scores: np.ndarray, data: BanditData) -> np.ndarray:
    """Flat probabilities of the greedy policy on flat `scores` (first best wins ties)."""
    seg = data.segment
    order = np.lexsort((np.arange(len(scores)), -np.asarray(scores, dtype=np.float64), seg))
    probs = np.zeros(len(scores))
    probs[order[data.offsets[:-1]]] = 1.0
    return probs


def epsilon_greedy_probs(scores: np.ndarray, data: BanditData, epsilon: float) -> np.ndarray:
    return (1.0 - epsilon) * argmax_probs(scores, data) + epsilon * uniform_probs(data)


# ----------------------------------------------------------------------------- estimates


@dataclass
class Estimate:
    """One estimator's take fraction for one policy."""

    value: float
    lo: float
    hi: float
    ess: float
    n: int  # rows the estimator used
    boot: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)
    max_weight: float = float("nan")  # largest importance weight among the rows used

    def as_dict(self) -> dict[str, float]:
        return {"value": self.value, "lo": self.lo, "hi": self.hi, "ess": self.ess, "n": self.n,
                "max_weight": self.max_weight}


def bootstrap_counts(n: int, reps: int, seed: int, clusters: np.ndarray | None = None) -> np.ndarray:
    """Poisson(1) resampling weights, shape (reps, n), float32.

    With `clusters` (shape (n,), any hashable labels, e.g. member ids) whole clusters
    are resampled: every row of a cluster gets its cluster's weight, so decisions that
    are correlated (one member's) enter or leave a resample together.
    """
    rng = np.random.default_rng(seed)
    if clusters is None:
        return rng.poisson(1.0, size=(reps, n)).astype(np.float32)
    codes, uniques = pd.factorize(pd.Series(np.asarray(clusters)).astype(str))
    if len(codes) != n:
        raise ValueError(f"clusters has {len(codes)} labels for {n} rows")
    per_cluster = rng.poisson(1.0, size=(reps, len(uniques))).astype(np.float32)
    return per_cluster[:, codes]


def bootstrap_clusters(data: "BanditData") -> np.ndarray | None:
    """The resampling unit of `data`: its member_id column when it has one, else its
    slate_id (the items of one ranked impression), else None (rows)."""
    for col in ("member_id", "slate_id"):
        if col in data.groups.columns and len(data.groups) == data.n:
            return data.groups[col].astype(str).to_numpy()
    return None


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def _ess(w: np.ndarray) -> float:
    s2 = float(np.sum(w * w))
    return float(np.sum(w) ** 2 / s2) if s2 > 0 else 0.0


def percentile_interval(boot: np.ndarray, confidence: float) -> tuple[float, float]:
    b = boot[np.isfinite(boot)]
    if not len(b):
        return float("nan"), float("nan")
    a = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(b, [a, 1.0 - a])
    return float(lo), float(hi)


def estimate(
    data: BanditData,
    probs: np.ndarray,
    rhat: np.ndarray | None = None,
    counts: np.ndarray | None = None,
    clip: float | None = None,
    confidence: float = 0.95,
    estimators: tuple[str, ...] = ESTIMATORS,
    rows: np.ndarray | None = None,
    switch_tau: float = SWITCH_TAU,
) -> dict[str, Estimate]:
    """Take fraction of the policy with flat candidate probabilities `probs`.

    Args:
        rhat: flat reward-model predictions for every candidate (DR's direct-method
            term); DR is skipped without it.
        counts: bootstrap weights, shape (reps, n) (see `bootstrap_counts`); no
            intervals without them.
        clip: cap on importance weights (None: unclipped, unbiased).
        rows: estimate on these rows only (a breakdown); counts stay full-width.
        switch_tau: switch_dr's weight threshold.
    """
    sel = np.arange(data.n) if rows is None else np.asarray(rows, dtype=np.int64)
    r, p = data.reward[sel], data.propensity[sel]
    pi = probs[data.logged[sel]]
    w = pi / p
    if clip is not None:
        w = np.minimum(w, clip)
    c = counts[:, sel] if counts is not None else np.ones((0, len(sel)), np.float32)
    ones = np.ones(len(sel))
    out: dict[str, Estimate] = {}

    def add(name: str, num_vec: np.ndarray, den_vec: np.ndarray, weights: np.ndarray, used: int,
            extra: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        """value = sum(num) / sum(den) (+ sum(extra num) / sum(extra den)), bootstrapped alike."""
        parts = [(num_vec, den_vec)] + ([extra] if extra is not None else [])
        value = 0.0
        boot = np.zeros(len(c))
        for num, den_v in parts:
            den = float(den_v.sum())
            value += float(num.sum() / den) if den > 0 else float("nan")
            if len(c):
                boot = boot + _ratio(c @ num, c @ den_v)
        lo, hi = percentile_interval(boot, confidence) if len(boot) else (float("nan"), float("nan"))
        out[name] = Estimate(value, lo, hi, _ess(weights), used, boot,
                             float(weights.max()) if len(weights) else float("nan"))

    if "replay" in estimators:
        u = data.uniform[sel].astype(float)
        wu = u * (pi / p)  # on uniform rows 1/p is the pool size: the pool-size correction
        add("replay", wu * r, wu, wu[u > 0], int(np.count_nonzero(wu)))
    if "ips" in estimators:
        add("ips", w * r, ones, w, len(sel))
    if "snips" in estimators:
        add("snips", w * r, w, w, len(sel))
    if rhat is not None:
        dm = segment_sum(probs * rhat, data)[sel]
        resid = w * (r - rhat[data.logged[sel]])
        if "dr" in estimators:
            add("dr", dm + resid, ones, w, len(sel))
        if "dm" in estimators:
            add("dm", dm, ones, np.zeros(0), len(sel))
        if "sndr" in estimators:
            add("sndr", dm, ones, w, len(sel), extra=(resid, w))
        if "switch_dr" in estimators:
            keep = w <= switch_tau
            add("switch_dr", dm + resid * keep, ones, w * keep, len(sel))
    return out


def difference(a: Estimate, b: Estimate, confidence: float = 0.95) -> dict[str, float]:
    """a - b with a paired bootstrap interval (both estimated with the same counts)."""
    lo, hi = percentile_interval(a.boot - b.boot, confidence) if len(a.boot) and len(a.boot) == len(b.boot) else (
        float("nan"), float("nan"))
    return {"value": a.value - b.value, "lo": lo, "hi": hi}


def iter_groups(data: BanditData, columns: list[str]) -> Iterator[tuple[str, str, np.ndarray]]:
    """(column, value, row indices) for every value of every breakdown column."""
    for col in columns:
        if col not in data.groups.columns:
            continue
        values = data.groups[col].astype(str).to_numpy()
        for v in sorted(set(values)):
            yield col, v, np.flatnonzero(values == v)
