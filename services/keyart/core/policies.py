"""Exploration policies: turn candidate scores into exact choice probabilities.

Every policy returns a probability vector over the candidates; the choice is then
drawn from it with a stable uniform number (`stable.py`), so the logged
propensity is exactly the probability of what was shown.
"""

from __future__ import annotations

import numpy as np


def greedy(scores: np.ndarray) -> np.ndarray:
    """All mass on the first best candidate. scores: shape (n,)."""
    p = np.zeros(len(scores))
    p[int(np.argmax(scores))] = 1.0
    return p


def uniform(n: int) -> np.ndarray:
    """Each of n candidates equally likely (the slice replay evaluation uses)."""
    return np.full(n, 1.0 / n)


def epsilon_greedy(scores: np.ndarray, epsilon: float) -> np.ndarray:
    """Best with 1 - epsilon, plus epsilon spread uniformly over all candidates."""
    n = len(scores)
    return (1.0 - epsilon) * greedy(scores) + epsilon / n


def softmax(scores: np.ndarray, temperature: float) -> np.ndarray:
    """Boltzmann exploration: p_i proportional to exp(score_i / temperature)."""
    z = (scores - np.max(scores)) / temperature
    e = np.exp(z)
    return e / e.sum()


def thompson(ensemble_scores: np.ndarray, epsilon: float, scores: np.ndarray | None = None) -> np.ndarray:
    """Exploration by bootstrap-ensemble Thompson sampling, within epsilon-greedy's budget.

    Drawing one ensemble member uniformly and taking its best is the same distribution
    as choosing candidate i with the share of members whose best is i. Pure Thompson
    sampling explored more than it earned on held-out decisions (bench-quality: it lost
    0.001-0.004 take fraction to epsilon-greedy), so with `scores` (the full model's) the
    best image keeps 1 - epsilon and the exploration share epsilon goes half to the
    Thompson draw (images some plausible model thinks best) and half uniformly (every
    image keeps a propensity >= epsilon / 2k for off-policy evaluation). That is never
    worse than epsilon-greedy when the posterior's picks beat a uniform pick.
    Without `scores`: the Thompson share mixed with an epsilon floor.

    Args:
        ensemble_scores: shape (n_members, n_candidates).
        scores: shape (n_candidates,), the full model's scores.
    """
    k, n = ensemble_scores.shape
    best = np.argmax(ensemble_scores, axis=1)
    share = np.bincount(best, minlength=n) / k
    if scores is None:
        return (1.0 - epsilon) * share + epsilon / n
    return (1.0 - epsilon) * greedy(scores) + epsilon * (0.5 * share + 0.5 / n)


def distribution_rows(policy: str, scores: np.ndarray, ensemble: np.ndarray | None, epsilon: float,
                      temperature: float) -> np.ndarray:
    """The policy's distribution for each row of `scores` (titles with k candidates each).

    Row by row the same arithmetic as the 1-D policies above, so each row equals what
    they return for it (the ranker's vectorized path relies on that; tests check it).

    Args:
        scores: shape (t, k). ensemble: shape (members, t, k), for thompson.
    """
    t, k = scores.shape
    if policy == "uniform":
        return np.full((t, k), 1.0 / k)
    if policy == "softmax":
        z = (scores - np.max(scores, axis=1, keepdims=True)) / temperature
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)
    g = np.zeros((t, k))
    g[np.arange(t), np.argmax(scores, axis=1)] = 1.0
    if policy == "greedy":
        return g
    if policy == "thompson" and ensemble is not None:
        members = ensemble.shape[0]
        best = np.argmax(ensemble, axis=2)  # (members, t)
        share = np.zeros((t, k))
        np.add.at(share, (np.broadcast_to(np.arange(t), best.shape), best), 1.0)
        return (1.0 - epsilon) * g + epsilon * (0.5 * (share / members) + 0.5 / k)
    return (1.0 - epsilon) * g + epsilon / k


def new_image_floor_rows(p: np.ndarray, new: np.ndarray, share: float) -> np.ndarray:
    """Rows of `p` with `share` moved uniformly onto the row's new images (rows with none
    or all new unchanged): the ranker's cold-start floor, row by row."""
    n_new = new.sum(axis=1, keepdims=True)
    mixed = (1.0 - share) * p + share * new / np.maximum(n_new, 1)
    some = (n_new > 0) & (n_new < new.shape[1])
    return np.where(some, mixed, p)


def draw_rows(p: np.ndarray, u: np.ndarray) -> np.ndarray:
    """`draw` for each row of p (shape (t, k)) with its own u (shape (t,))."""
    cdf = np.cumsum(p, axis=1)
    i = (cdf <= (u * cdf[:, -1])[:, None]).sum(axis=1)
    return np.minimum(i, p.shape[1] - 1)


def draw(p: np.ndarray, u: float) -> int:
    """Index chosen by inverse-CDF sampling with u in [0, 1): P(i) = p[i] exactly."""
    cdf = np.cumsum(p)
    i = int(np.searchsorted(cdf, u * cdf[-1], side="right"))
    return min(i, len(p) - 1)
