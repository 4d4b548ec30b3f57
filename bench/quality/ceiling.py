"""Where a world's closure is lost: choose with the truth's own formula, its hidden
parts replaced one by one with what a learner can know.

A diagnostic, not a peer: it is told the world's functional form. It reads the log and
the imported world that `make bench-quality` left in var/bench-quality/<world> and
scores on the same held-out decisions, against the same non-contextual bandit.

    PYTHONPATH=bench .venv/bin/python -m quality.ceiling [WORLD [WORK_DIR]]

- appeal: each image's hidden intrinsic appeal, or its start rate in the training rows
  shrunk with 100 pseudo-rows (centered within its title), as the offsets learn it;
- genre_lens: the hidden genre taste, or Keyart's estimate (the member_genre_affinity
  shares of the last snapshot) mapped to taste by a per-genre quadratic fitted on the
  truth, the best any learner could make of the shares; the tone x taste and the
  faces/scenes x genre-lean effects, each left out in turn;
- star_power: the hidden fandom for the cast shown, or the sum of Keyart's actor
  affinities (member_actor_affinity) for the cast shown, mapped to it by a quadratic
  fitted on the truth; the fandom and the country x attribute effects left out in turn;
- any other world (small_screens, the generality probes of `quality.probes`): its own
  formula with the hidden appeal, then also the hidden genre taste, swapped as above.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from quality.keyart_path import REPO
from quality.peers import non_contextual
from quality.run import heldout_of_log
from quality.scoring import Candidates, candidates, closure
from quality.world_base import SyntheticWorld, sigmoid
from quality.worlds import CHARACTER, CLOSEUP, HAPPY, SCENE, G, GenreLens, StarPower, make_world


def _values(world: GenreLens, cands: Candidates, taste: np.ndarray, appeal: np.ndarray, tone: bool = True,
            lean: bool = True) -> float:
    """Value of choosing by the truth's formula with these estimates."""
    d = cands.decision_of_row
    m, i = cands.decisions["member"].to_numpy()[d], cands.image
    t = world.i_title[i]
    tone_term = taste[m, world.i_tone[i]] - 0.1
    th = taste[m]
    lean_axis = th[:, [G["drama"], G["romance"], G["family"]]].sum(1) - th[:, [G["action"], G["thriller"],
                                                                                G["scifi"]]].sum(1)
    style = world.i_style[i]
    faces = (style == CLOSEUP) | (style == CHARACTER)
    k = np.where(world.watched(m, t), 0.5, 1.0)
    image = (appeal[i] + tone * 2.0 * tone_term
             + lean * lean_axis * (0.9 * faces - 0.7 * (style == SCENE) + 0.4 * (world.i_expression[i] == HAPPY)))
    a = np.einsum("ij,ij->i", th, world.t_genre[t])
    start = -2.0 + 0.5 * np.log(world.t_pop[t]) + 2.5 * (a - 0.1) + k * image
    stay = 0.2 + 1.5 * (a - 0.1) + k * tone * tone_term + 0.5 * (k < 1)
    return cands.value_of_choice(sigmoid(start) * sigmoid(stay))


def _keyart_taste(world: GenreLens, data_dir: Path) -> np.ndarray:
    """Keyart's genre shares of the last snapshot, mapped to taste per genre (quadratic fit on the truth)."""
    from keyart.jobs.world.features import derive_features
    from keyart.jobs.world.world_model import load_world

    tables = derive_features(load_world(data_dir / "world"))
    g = tables["member_genre_affinity"]
    g = g[g["event_timestamp"] == g["event_timestamp"].max()]
    rows = g["member_id"].str[1:].astype(int).to_numpy()
    shares = np.stack(g["genre_weights"].map(np.asarray).to_numpy())
    out = np.tile(world.m_taste.mean(0), (world.n_members, 1))  # no history: the population's
    for k in range(shares.shape[1]):
        design = np.c_[np.ones(len(rows)), shares[:, k], shares[:, k] ** 2]
        beta = np.linalg.lstsq(design, world.m_taste[rows, k], rcond=None)[0]
        out[rows, k] = design @ beta
    return out


def _estimated_appeal(world: SyntheticWorld, rows: pd.DataFrame, prior: float = 100.0) -> np.ndarray:
    index = {world.image_id(i): i for i in range(world.n_images)}
    img = rows["image_id"].map(index).to_numpy()
    started = (rows["max_minutes"].fillna(0.0).to_numpy(float) > 0).astype(float)
    mean = started.mean()
    pos = np.bincount(img, weights=started, minlength=world.n_images)
    cnt = np.bincount(img, minlength=world.n_images)
    rate = (pos + prior * mean) / (cnt + prior)
    logit = np.log(rate / (1 - rate)) - np.log(mean / (1 - mean))
    t = world.i_title
    return logit - np.bincount(t, weights=logit)[t] / np.bincount(t)[t]


def _star_values(world: StarPower, cands: Candidates, fan: np.ndarray, appeal: np.ndarray, country: bool = True,
                 fandom: bool = True) -> float:
    """Value of choosing by star_power's formula with these estimates (fan: per candidate row)."""
    d = cands.decision_of_row
    m, i = cands.decisions["member"].to_numpy()[d], cands.image
    ctry = cands.decisions["country"].to_numpy()[d]
    t = world.i_title[i]
    a = world.match(m, t)
    star = np.asarray(world.i_cast[i] @ np.log(world.a_pop)).ravel()
    start = (-2.0 + 0.5 * np.log(world.t_pop[t]) + 1.5 * (a - 0.1) + appeal[i] + 0.1 * star
             + fandom * 1.1 * fan + country * world.country_effect(i, ctry))
    stay = 0.3 + 1.0 * (a - 0.1) + fandom * 0.4 * fan
    return cands.value_of_choice(sigmoid(start) * sigmoid(stay))


def _keyart_fandom(world: StarPower, cands: Candidates, data_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """(hidden fandom for the cast shown, Keyart's affinity sum for it mapped to the fandom) per candidate row."""
    from scipy import sparse

    from keyart.jobs.world.features import derive_features
    from keyart.jobs.world.world_model import load_world

    tables = derive_features(load_world(data_dir / "world"))
    a = tables["member_actor_affinity"]
    a = a[a["event_timestamp"] == a["event_timestamp"].max()]
    rows, cols, vals = [], [], []
    for member, actors, weights in zip(a["member_id"], a["top_actors"], a["top_actor_weights"]):
        rows += [int(member[1:])] * len(actors)
        cols += [int(actor[1:]) for actor in actors]
        vals += list(weights)
    estimate = sparse.csr_matrix((vals, (rows, cols)), shape=(world.n_members, world.n_actors))
    m = cands.decisions["member"].to_numpy()[cands.decision_of_row]

    def shown(matrix) -> np.ndarray:
        return np.asarray(matrix[m].multiply(world.i_cast[cands.image]).sum(axis=1)).ravel()

    truth, e = shown(world.m_fandom), shown(estimate)
    design = np.c_[np.ones(len(e)), e, e ** 2]
    return truth, design @ np.linalg.lstsq(design, truth, rcond=None)[0]


def _generic_cases(world: SyntheticWorld, cands: Candidates, appeal: np.ndarray, data_dir: Path) -> dict[str, float]:
    """Any world's own formula (`p_quality`), with its hidden appeal and then its hidden genre
    taste swapped for what a learner can know (the taste as in `_keyart_taste`)."""
    d = cands.decision_of_row
    m, i = cands.decisions["member"].to_numpy()[d], cands.image
    dev, ctry = cands.decisions["device"].to_numpy()[d], cands.decisions["country"].to_numpy()[d]
    hidden_appeal, hidden_taste = world.i_quality, world.m_taste
    out = {"hidden taste, hidden appeal": cands.value_of_choice(world.p_quality(m, i, dev, ctry))}
    try:
        world.i_quality = appeal
        out["hidden taste, estimated appeal"] = cands.value_of_choice(world.p_quality(m, i, dev, ctry))
        world.m_taste = _keyart_taste(world, data_dir)  # type: ignore[arg-type]
        out["keyart taste, estimated appeal"] = cands.value_of_choice(world.p_quality(m, i, dev, ctry))
    finally:
        world.i_quality, world.m_taste = hidden_appeal, hidden_taste
    return out


def scoring_frame(world: SyntheticWorld, log: pd.DataFrame, seed: int) -> tuple[pd.DataFrame, Candidates, float, float]:
    """(training rows, held-out candidates, non-contextual value, oracle value) of a run's log:
    the oldest 80 % of the log (Keyart's default hold-out is the newest 20 %), the run's
    5,000 held-out decisions (traffic `seed`), and the bandit trained on those rows."""
    rows = log.sort_values("decided_at").iloc[: int(len(log) * 0.8)]
    cands = candidates(world, heldout_of_log(world, log, seed, 5000))
    y = (rows["max_minutes"].to_numpy(float) >= world.quality_minutes).astype(float)
    image_ids = np.array([world.image_id(i) for i in cands.image], dtype=object)
    nc = cands.value_of_choice(non_contextual(rows["image_id"].to_numpy(), y)(image_ids))
    return rows, cands, nc, cands.oracle()


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    name = (args or ["genre_lens"])[0]
    world = make_world(name)
    base = Path(args[1]) / name if len(args) > 1 else REPO / "var" / "bench-quality" / name
    log = pd.read_parquet(base / "log.parquet")
    rows, cands, nc, oracle = scoring_frame(world, log, 2026)  # the bench's default traffic seed
    appeal = _estimated_appeal(world, rows)
    if isinstance(world, GenreLens):
        taste = _keyart_taste(world, base / "data")
        cases = {
            "hidden taste, hidden appeal": _values(world, cands, world.m_taste, world.i_quality),
            "keyart taste, hidden appeal": _values(world, cands, taste, world.i_quality),
            "keyart taste, estimated appeal": _values(world, cands, taste, appeal),
            "  without the lean effects": _values(world, cands, taste, appeal, lean=False),
            "  without the tone effect": _values(world, cands, taste, appeal, tone=False),
            "estimated appeal alone": _values(world, cands, taste, appeal, tone=False, lean=False),
        }
    elif isinstance(world, StarPower):
        truth, fan = _keyart_fandom(world, cands, base / "data")
        cases = {
            "hidden fandom, hidden appeal": _star_values(world, cands, truth, world.i_quality),
            "keyart fandom, hidden appeal": _star_values(world, cands, fan, world.i_quality),
            "hidden fandom, estimated appeal": _star_values(world, cands, truth, appeal),
            "keyart fandom, estimated appeal": _star_values(world, cands, fan, appeal),
            "  without the fandom effect": _star_values(world, cands, fan, appeal, fandom=False),
            "  without the country effects": _star_values(world, cands, fan, appeal, country=False),
        }
    else:  # any other world (small_screens, the probes): its own formula with hidden parts swapped
        cases = _generic_cases(world, cands, appeal, base / "data")
    out = {case: round(closure(v, nc, oracle), 3) for case, v in cases.items()}
    print(json.dumps({"world": name, "non_contextual": round(nc, 5), "oracle": round(oracle, 5), "closure": out},
                     indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
