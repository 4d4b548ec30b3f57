"""The Bayes chooser of genre_lens: what a learner told the world's whole generative model
could reach on the log `make bench-quality` left, an upper reference for any learner.

A diagnostic, not a peer. It knows what no learner is told: the Dirichlet prior of
taste, how the viewing history is drawn from it (the title-choice logit and the minutes
of liked and abandoned views), and the ground truth's formula with its coefficients.
It does not know each member's taste nor each image's appeal; those it infers:

- taste: a posterior over 4,000 draws from the prior (importance weights), from the
  member's history (titles chosen, minutes watched) and the member's logged outcomes
  (start, and stay once started) under the current appeal;
- appeal: each image's maximum a posteriori value under its N(0, 0.25^2) prior, given
  the logged starts and the posterior-mean rest of the start logit; two rounds;
- choice: the candidate with the highest posterior expected P(quality play).

    PYTHONPATH=bench:services .venv/bin/python -m quality.bayes [WORK_DIR] [--rows train|all] [--seed S] [--draws N]

`--rows train` uses the oldest 80 % of the log, as `quality.ceiling`; `all` (default)
every logged decision, as Keyart's final refit does. About 4 minutes, 4 GB.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.special import expit, logsumexp

from quality.ceiling import _values, scoring_frame
from quality.keyart_path import REPO
from quality.scoring import closure
from quality.worlds import CHARACTER, CLOSEUP, HAPPY, SCENE, G, GenreLens

APPEAL_SD = 0.25
CHUNK = 5000


def _normalized(loglik: np.ndarray) -> np.ndarray:
    """Importance weights per member (row) from log-likelihoods over the prior draws."""
    weights = np.exp(loglik - loglik.max(axis=1, keepdims=True))
    return weights / weights.sum(axis=1, keepdims=True)


class BayesChooser:
    """Posterior taste and appeal for genre_lens, by importance weights over prior draws."""

    def __init__(self, world: GenreLens, rows: pd.DataFrame, draws: int = 4000, seed: int = 0) -> None:
        self.world = world
        self.draws = np.random.default_rng(seed).dirichlet(np.full(10, world.taste_concentration), draws)
        self.lean = np.zeros(10)
        self.lean[[G["drama"], G["romance"], G["family"]]] = 1.0
        self.lean[[G["action"], G["thriller"], G["scifi"]]] = -1.0
        index = {world.image_id(i): i for i in range(world.n_images)}
        self.image = rows["image_id"].map(index).to_numpy()
        self.member = rows["member_id"].str[1:].astype(int).to_numpy()
        minutes = rows["max_minutes"].fillna(0.0).to_numpy(float)
        self.started, self.stayed = minutes > 0, minutes >= world.quality_minutes
        self.history = self._history_loglik()

    def _history_loglik(self) -> np.ndarray:
        """log P(history | draw) per (member, draw): titles by the choice logit, then minutes."""
        w, d = self.world, self.draws
        v = w.viewing
        m = v["member_id"].str[1:].astype(int).to_numpy()
        t = v["title_id"].str[1:].astype(int).to_numpy()
        norm = logsumexp(np.log(w.t_pop)[None, :] + 4.0 * d @ w.t_genre.T, axis=1)
        genres = np.zeros((w.n_members, 10))
        np.add.at(genres, m, w.t_genre[t])
        ll = 4.0 * genres @ d.T - np.bincount(m, minlength=w.n_members)[:, None] * norm[None, :]
        runtime, minutes = w.t_runtime[t], v["minutes_watched"].to_numpy()
        # Densities of the minutes if liked (0.6-1.0 of the runtime) or not (2-25 minutes).
        if_liked = np.where((minutes >= 0.6 * runtime - 0.05) & (minutes <= runtime + 0.05), 1 / (0.4 * runtime), 0.0)
        if_not = np.where((minutes >= 1.95) & (minutes <= 25.05), 1 / 23.0, 0.0)
        for s in range(0, len(m), CHUNK):
            sl = slice(s, s + CHUNK)
            p = expit(6.0 * (w.t_genre[t[sl]] @ d.T - 0.15) + 0.5)
            np.add.at(ll, m[sl], np.log(p * if_liked[sl, None] + (1 - p) * if_not[sl, None] + 1e-300))
        return ll

    def logits(self, m: np.ndarray, i: np.ndarray, appeal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(start, stay) logits per (row, draw) by the world's formula."""
        w, d = self.world, self.draws
        t = w.i_title[i]
        style = w.i_style[i]
        faces = (style == CLOSEUP) | (style == CHARACTER)
        look = 0.9 * faces - 0.7 * (style == SCENE) + 0.4 * (w.i_expression[i] == HAPPY)
        k = np.where(w.watched(m, t), 0.5, 1.0)[:, None]
        tone = d[:, w.i_tone[i]].T - 0.1
        match = w.t_genre[t] @ d.T
        image = appeal[i][:, None] + 2.0 * tone + (d @ self.lean)[None, :] * look[:, None]
        start = -2.0 + 0.5 * np.log(w.t_pop[t])[:, None] + 2.5 * (match - 0.1) + k * image
        stay = 0.2 + 1.5 * (match - 0.1) + k * tone + 0.5 * (k < 1)
        return start, stay

    def taste_weights(self, appeal: np.ndarray) -> np.ndarray:
        """Posterior weights (members, draws): history and logged outcomes."""
        ll = self.history.copy()
        for s in range(0, len(self.member), CHUNK):
            sl = slice(s, s + CHUNK)
            start, stay = self.logits(self.member[sl], self.image[sl], appeal)
            started, stayed = self.started[sl, None], self.stayed[sl, None]
            c = -np.logaddexp(0, np.where(started, -start, start))
            c += np.where(started, -np.logaddexp(0, np.where(stayed, -stay, stay)), 0.0)
            np.add.at(ll, self.member[sl], c)
        return _normalized(ll)

    def appeal(self, weights: np.ndarray) -> np.ndarray:
        """Each image's MAP appeal given the posterior-mean rest of its rows' start logits."""
        n = self.world.n_images
        zero = np.zeros(n)
        offset, k = np.empty(len(self.member)), np.empty(len(self.member))
        for s in range(0, len(self.member), CHUNK):
            sl = slice(s, s + CHUNK)
            start, _ = self.logits(self.member[sl], self.image[sl], zero)
            offset[sl] = np.einsum("rd,rd->r", start, weights[self.member[sl]])
            t = self.world.i_title[self.image[sl]]
            k[sl] = np.where(self.world.watched(self.member[sl], t), 0.5, 1.0)
        q, i = zero.copy(), self.image
        for _ in range(30):  # Newton steps on the penalized log-likelihood
            p = expit(offset + k * q[i])
            grad = np.bincount(i, weights=k * (self.started - p), minlength=n) - q / APPEAL_SD ** 2
            hess = np.bincount(i, weights=k * k * p * (1 - p), minlength=n) + 1 / APPEAL_SD ** 2
            q += grad / hess
        return q

    def fit(self, rounds: int = 2) -> tuple[np.ndarray, np.ndarray]:
        """(taste weights, appeal), alternating from appeal 0."""
        appeal = np.zeros(self.world.n_images)
        weights = self.taste_weights(appeal)
        for _ in range(rounds):
            appeal = self.appeal(weights)
            weights = self.taste_weights(appeal)
        return weights, appeal

    def expected_quality(self, m: np.ndarray, i: np.ndarray, weights: np.ndarray, appeal: np.ndarray) -> np.ndarray:
        out = np.empty(len(i))
        for s in range(0, len(i), CHUNK):
            sl = slice(s, s + CHUNK)
            start, stay = self.logits(m[sl], i[sl], appeal)
            out[sl] = np.einsum("rd,rd->r", expit(start) * expit(stay), weights[m[sl]])
        return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("work_dir", nargs="?", type=Path, default=REPO / "var" / "bench-quality")
    parser.add_argument("--rows", choices=("train", "all"), default="all")
    parser.add_argument("--seed", type=int, default=2026, help="the run's traffic seed (its held-out decisions)")
    parser.add_argument("--draws", type=int, default=4000, help="prior draws of taste (importance sampling)")
    args = parser.parse_args(argv)
    world = GenreLens()
    log = pd.read_parquet(args.work_dir / world.name / "log.parquet")
    train, cands, nc, oracle = scoring_frame(world, log, args.seed)
    rows = log if args.rows == "all" else train
    chooser = BayesChooser(world, rows, draws=args.draws)
    weights, appeal = chooser.fit()
    taste = weights @ chooser.draws
    m = cands.decisions["member"].to_numpy()[cands.decision_of_row]
    cases = {
        "bayes: posterior expected value": cands.value_of_choice(
            chooser.expected_quality(m, cands.image, weights, appeal)),
        "posterior-mean taste and appeal": _values(world, cands, taste, appeal),
        "posterior-mean taste, hidden appeal": _values(world, cands, taste, world.i_quality),
        "hidden taste, posterior appeal": _values(world, cands, world.m_taste, appeal),
    }
    # How much of the taste the history alone reveals: the same posterior without the
    # member's logged outcomes (what Keyart's features read is the history alone).
    alone = _normalized(chooser.history)
    cases["taste from the history alone: expected value"] = cands.value_of_choice(
        chooser.expected_quality(m, cands.image, alone, appeal))
    print(json.dumps({
        "world": world.name, "rows": len(rows), "draws": args.draws,
        "appeal_correlation": round(float(np.corrcoef(appeal, world.i_quality)[0, 1]), 3),
        "taste_mean_abs_error": round(float(np.abs(taste - world.m_taste).mean()), 4),
        "closure": {case: round(closure(v, nc, oracle), 3) for case, v in cases.items()},
    }, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
