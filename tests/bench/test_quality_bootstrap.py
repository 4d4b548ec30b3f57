"""The closure intervals of `make bench-quality` cover the true closure as often as they say."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from quality.scoring import bootstrap_closures, interval  # noqa: E402


def _decisions(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-decision values of a bandit, an oracle and a policy whose true closure is 0.5.

    The three share each decision's difficulty (as on real held-out decisions), so only a
    paired resample gets the spread of the closure right."""
    base = rng.beta(2.0, 12.0, n)  # the decision's take fraction with a poor image
    lift = rng.exponential(0.03, n)  # what the best image adds
    nc = base + 0.2 * lift + rng.normal(0, 0.01, n)
    oracle = base + lift
    policy = base + 0.6 * lift + rng.normal(0, 0.01, n)  # true closure (0.6 - 0.2) / (1 - 0.2) = 0.5
    return nc, oracle, policy


def test_ninety_percent_intervals_cover_the_true_closure_ninety_percent_of_the_time() -> None:
    rng = np.random.default_rng(2026)
    covered, widths = 0, []
    runs = 200
    for r in range(runs):
        nc, oracle, policy = _decisions(rng, 2000)
        boot = bootstrap_closures({"policy": policy, "nc": nc}, nc, oracle, seed=r, resamples=400)
        lo, hi = interval(boot["policy"])
        covered += lo <= 0.5 <= hi
        widths.append(hi - lo)
        assert interval(boot["nc"]) == [0.0, 0.0]
    # Binomial(200, 0.9): 0.84..0.96 holds with probability > 0.99. Resampling each series on
    # its own (unpaired) gives intervals about twice as wide: coverage near 1, and this fails.
    assert 0.84 <= covered / runs <= 0.96, covered / runs
    assert 0.01 < float(np.median(widths)) < 0.1


def test_paired_differences_see_a_real_gap() -> None:
    rng = np.random.default_rng(7)
    nc, oracle, policy = _decisions(rng, 5000)
    worse = policy - 0.1 * (oracle - nc)  # true closure 0.4: 0.1 below the policy on every decision
    boot = bootstrap_closures({"policy": policy, "worse": worse}, nc, oracle, seed=1, resamples=1000)
    lo, hi = interval(boot["policy"] - boot["worse"])
    assert 0.09 <= lo <= 0.1 <= hi <= 0.11  # the paired difference is nearly exact
