"""`simulate`: the closed loop of the seed's "Performance evaluation", on the synthetic world.

Round 0 logs uniform-random exploration. Then, for each round k = 1..rounds: train a
model on every log so far, serve it (epsilon-greedy, with a hashed share of members
explored uniformly) and log what it shows with outcomes drawn from the world's
ground truth. The last round's log was served by the last model and is not in its
training data: on it the loop reports, for the random, the non-contextual bandit
(best image per title, fitted on the same logs as the model, never on the last
round), the contextual (greedy on the last model) and the contextual as served
(`contextual_served`: epsilon-greedy on it, uniform for the uniformly explored
members, i.e. the last round's logging policy) policies:

* TRUE take fraction: the expected quality-play probability of the policy's choice,
  World.quality_play_prob averaged over the round's (member, device, country,
  title) contexts (no sampling noise); `truth_uniform_slice` averages over the
  uniformly explored members' contexts only, which is what replay estimates (the
  slice is a hashed share of members, so on a small world its members' base rate
  differs from everyone's);
* replay estimate (with bootstrap interval) on the round's uniform slice, and IPS,
  SNIPS and DR on all its rows, each with its ESS and largest importance weight.

Truth and estimates are computed from one array of candidate probabilities per
policy, so they always refer to the same fitted policy. Intervals resample members.
The served policy's stable draws are salted with the seed (`LoopConfig.salt`), so
different seeds are independent replications.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Any, Callable

import numpy as np
import pandas as pd

from keyart.core.featurize import CatalogIndex
from keyart.core.model import QualityPlayModel
from keyart.core.ranker import PolicyConfig, Ranker
from keyart.jobs.world.world_model import World
from keyart_training.data.dataset import label
from keyart_training.ope.estimators import argmax_probs, epsilon_greedy_probs, segment_sum, uniform_probs
from keyart_training.ope.evaluate import (
    EvalConfig,
    PolicyView,
    estimate_policies,
    fit_noncontextual,
    fit_reward_model,
    keyart_bandit_data,
    noncontextual_flat_scores,
)
from keyart_training.simulate import CachedLookup, HistoricalLookup, planned_entities, simulate_pages
from keyart_training.train import TrainConfig, train_quality_model

POLICIES: tuple[str, ...] = ("random", "non_contextual", "contextual", "contextual_served")


@dataclass(frozen=True)
class LoopConfig:
    rounds: int = 3  # train-and-serve rounds after the uniform round
    pages_first: int = 3000  # pages of the uniform exploration round
    pages_per_round: int = 2000
    pages_last: int = 4000  # the last round is the evaluation log
    titles_per_page: int = 10
    days_per_round: float = 3.0
    epsilon: float = 0.1
    uniform_share: float = 0.3
    bootstrap: int = 200
    seed: int = 11
    num_leaves: int = 31
    max_rounds: int = 300
    num_threads: int = 1
    # Salt of the served policy's stable draws; None: derived from the seed, so that two
    # seeds are independent replications (one salt would give every seed the same
    # exploration draw for a member, title and day).
    salt: str | None = None

    @property
    def policy_salt(self) -> str:
        return self.salt if self.salt is not None else f"keyart-sim-{self.seed}"


def true_take_fraction(world: World, data, probs: np.ndarray, rows: np.ndarray | None = None) -> float:
    """Expected take fraction of a policy (flat candidate probabilities) on data's contexts
    (or on the contexts of `rows`, a boolean mask or indices)."""
    seg = data.segment
    q = world.quality_play_prob(
        data.groups["member_id"].to_numpy()[seg], data.candidates,
        data.groups["device"].to_numpy()[seg], data.groups["country"].to_numpy()[seg],
    )
    per_row = segment_sum(probs * q, data)
    return float(np.mean(per_row if rows is None else per_row[rows]))


def served_probs(scores: np.ndarray, data, epsilon: float) -> np.ndarray:
    """Flat probabilities of the served policy: epsilon-greedy on `scores`, uniform on the
    rows of the uniformly explored members."""
    return np.where(data.uniform[data.segment], uniform_probs(data), epsilon_greedy_probs(scores, data, epsilon))


def closed_loop(
    world: World,
    index: CatalogIndex,
    lookup: HistoricalLookup,
    config: LoopConfig | None = None,
    progress: bool = False,
    say: Callable[[str], None] = lambda m: None,
) -> dict[str, Any]:
    cfg = config or LoopConfig()
    min_minutes = world.params.quality_minutes
    span = timedelta(days=cfg.days_per_round)
    start = world.now - span * cfg.rounds  # round k ends at start + k * span

    # One offline-store query for every round (its fixed cost dominates small rounds).
    cached = CachedLookup(lookup)
    pages_of = [cfg.pages_first] + [cfg.pages_per_round] * (cfg.rounds - 1) + [cfg.pages_last]
    cached.prefetch(pd.concat([
        planned_entities(world, pages_of[k], cfg.days_per_round, cfg.seed + 1000 * k, start + span * k)
        for k in range(cfg.rounds + 1)], ignore_index=True))

    def log_round(k: int, ranker: Ranker | None, pages: int) -> pd.DataFrame:
        return simulate_pages(world, index, cached, pages=pages, titles_per_page=cfg.titles_per_page,
                              days=cfg.days_per_round, seed=cfg.seed + 1000 * k, ranker=ranker,
                              progress=progress, end=start + span * k)

    say(f"round 0: uniform exploration, {cfg.pages_first} pages")
    logs = [log_round(0, None, cfg.pages_first)]
    tcfg = TrainConfig(ensemble_size=0, num_leaves=cfg.num_leaves, max_rounds=cfg.max_rounds, seed=cfg.seed,
                       num_threads=cfg.num_threads)
    rounds: list[dict[str, Any]] = []
    model: QualityPlayModel | None = None
    for k in range(1, cfg.rounds + 1):
        labelled = label(pd.concat(logs, ignore_index=True), min_minutes, index.space,
                         source=f"simulated rounds 0..{k - 1}")
        res = train_quality_model(labelled.x, labelled.y, labelled.frame["decided_at"].to_numpy(), config=tcfg,
                                  started=labelled.started, image_ids=labelled.frame["image_id"].to_numpy(),
                                  space=index.space)
        model = res.as_model(f"sim-round-{k}")
        policy = PolicyConfig(name="epsilon_greedy", epsilon=cfg.epsilon, uniform_explore_share=cfg.uniform_share,
                              salt=cfg.policy_salt)
        say(f"round {k}: trained on {len(labelled.y)} rows (valid AUC {res.metrics['valid_auc']:.3f}), "
            f"serving {pages_of[k]} pages")
        logs.append(log_round(k, Ranker(index, model, policy), pages_of[k]))
        served = logs[-1]
        rounds.append({"round": k, "train_rows": int(len(labelled.y)), "valid_auc": res.metrics["valid_auc"],
                       "served_rows": int(len(served)),
                       "served_take_fraction": float(np.mean(served["max_minutes"] >= min_minutes))})
    assert model is not None
    # Evaluate on the last round (served by `model`, not in its training data).
    train_frame = pd.concat(logs[:-1], ignore_index=True)
    eval_frame = logs[-1]
    data, dropped = keyart_bandit_data(eval_frame, index, min_minutes, source="simulated last round")
    nc = fit_noncontextual(train_frame, min_minutes, None)
    tr = label(train_frame, min_minutes, index.space)
    assert data.x is not None  # built with candidate features
    rhat = fit_reward_model(tr.x, tr.y, tr.frame["decided_at"].to_numpy(), cfg.seed, space=index.space)(data.x)
    scores = model.predict(data.x, [str(i) for i in data.candidates])
    views = [
        PolicyView("random", uniform_probs(data), rhat),
        PolicyView("non_contextual", argmax_probs(noncontextual_flat_scores(nc, data), data), rhat),
        PolicyView("contextual", argmax_probs(scores, data), rhat),
        # What was really served: the model epsilon-greedy, its hashed uniform slice uniform.
        PolicyView("contextual_served", served_probs(scores, data, cfg.epsilon), rhat),
    ]
    ecfg = EvalConfig(min_minutes=min_minutes, bootstrap=cfg.bootstrap, seed=cfg.seed, breakdowns=())
    est = estimate_policies(data, views, ecfg)
    table: list[dict[str, Any]] = []
    for v in views:
        row = {"policy": v.name, "truth": true_take_fraction(world, data, v.probs),
               # replay's estimand: the same policy on the uniformly explored members' contexts
               "truth_uniform_slice": true_take_fraction(world, data, v.probs, data.uniform)}
        for name, e in est["policies"][v.name].items():
            row[name] = e["value"]
            row[f"{name}_lo"], row[f"{name}_hi"] = e["lo"], e["hi"]
            row[f"{name}_ess"], row[f"{name}_max_weight"] = e["ess"], e["max_weight"]
        table.append(row)
    truth = [float(r["truth"]) for r in table[:3]]
    replay = [float(r["replay"]) for r in table[:3]]
    return {
        "config": asdict(cfg),
        "rounds": rounds,
        "eval_rows": data.n,
        "eval_uniform_rows": int(data.uniform.sum()),
        "dropped": dropped,
        "table": table,
        "ordered_truth": bool(truth[0] < truth[1] < truth[2]),
        "ordered_replay": bool(replay[0] < replay[1] < replay[2]),
        "lifts": est["lifts"],
    }
