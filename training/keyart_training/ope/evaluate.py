"""Offline evaluation of artwork policies on the Keyart decision log.

Length (~600 lines, over the ~450 aim): it holds the out-of-sample split, the
baselines fitted apart from the scored rows and the breakdowns, which share one
BanditData pipeline. Splitting the baselines and the sample bookkeeping into their
own modules is the next step (issue 12 continues here).

`evaluate_log` answers "what take fraction (share of decisions followed by a
quality play) would each policy have had?" for:

* `random`: uniform over the title's pool;
* `non_contextual`: per title the image with the best overall take rate, estimated
  by IPS from the fit part of the log (shrunk toward the title's mean with
  `prior_rows` pseudo-rows), whatever the member;
* one greedy policy per model given (`current` = models/CURRENT, `candidate`):
  the image with the highest predicted quality-play probability;
* `logged`: the logging policy itself (on-policy mean reward; a sanity line).

No in-sample estimates, by construction (`split_for_evaluation`): every model's
`meta.json` records the decision-time window it was trained on
(`keyart_training.data.window`), and only decisions strictly after the latest window
end are scored. When there are none (or a model records no window) evaluation
refuses, unless `allow_in_sample`, which scores every row and marks the result
(`in_sample`, `sample.in_sample_models`, a leading note) so the promotion gate refuses
it. Without models the oldest `fit_share` of decisions is set aside instead.

Baselines fitted from the log (the non-contextual bandit, DR's LightGBM reward
model) never see a row they score: they are fitted on the older rows (those up to the
split) when the log holds at least `min_fit_rows` of them, else cross-fitted in
`crossfit_folds` member folds of the scored rows (each row's baseline is fitted on
the other folds, as Open Bandit Pipeline cross-fits DR's regression model). The
result's `sample` says which rows were scored (dates, rows, members) and how the
baselines were fitted.

Candidate sets: logged rows hold only the chosen image. The candidates of a row are
the title's active pool in the catalog (`CatalogIndex`); their feature vectors are
rebuilt from the logged vector: member and title columns are copied (they do not
depend on the image), image columns come from `CatalogIndex.image_matrix`, and the
crosses are recomputed: `tone_affinity` from the logged genre columns,
`small_screen_*` from the logged device code, `cast_affinity` / `max_cast_affinity`
/ `cast_known` / `max_cast_views` from the member's actor affinities. Those are not in the vector;
they are read, in order of preference, from the columns `top_actors` /
`top_actor_weights` (lists, as the simulator logs them; proposed as logged fields of
the decision log), from Feast's offline store as of `decided_at` (`lookup`), or
else set to 0 for every candidate, logged one included (an approximation noted in
the result's `notes`: models then cannot use favourite actors in evaluation).
Rows with a fallback decision (no features) or an image no longer in the pool are
dropped and counted.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import timedelta
from typing import Any

import numpy as np
import pandas as pd

from keyart.core.feature_space import FeatureSpace, translate_context
from keyart.core.featurize import CatalogIndex, candidate_rows
from keyart.core.model import QualityPlayModel
from keyart_training.data.dataset import DatasetError, HistoricalLookup, logged_actor_maps, quality_labels
from keyart_training.data.window import TrainingWindow, decision_times, holdout_split, utc
from keyart_training.ope.estimators import (
    ESTIMATORS,
    BanditData,
    Estimate,
    argmax_probs,
    bootstrap_clusters,
    bootstrap_counts,
    difference,
    estimate,
    iter_groups,
    percentile_interval,
    uniform_probs,
)

BREAKDOWNS: tuple[str, ...] = ("country", "device", "title_interacted")


@dataclass(frozen=True)
class EvalConfig:
    """How the evaluation is run."""

    min_minutes: float = 15.0  # a play of at least this many minutes is a success
    attribution_window_hours: float | None = None
    fit_share: float = 0.5  # oldest share of rows fitting the non-contextual bandit and reward model
    bootstrap: int = 200
    confidence: float = 0.95
    clip: float | None = None  # importance-weight cap (None: unclipped)
    reward_model: str = "lightgbm"  # "lightgbm" (fitted on the fit part) or "self" (model's own predictions)
    breakdowns: tuple[str, ...] = BREAKDOWNS
    prior_rows: float = 20.0
    estimators: tuple[str, ...] = ESTIMATORS
    seed: int = 0
    allow_in_sample: bool = False  # score models on rows that may be their training rows (marked in-sample)
    min_fit_rows: int = 1000  # fewer older rows than this: baselines are cross-fitted on the scored rows
    crossfit_folds: int = 3
    # The serving policy each model is also reported under (`<model>_served`), with its exploration.
    served_policy: str = "epsilon_greedy"
    epsilon: float = 0.05
    softmax_temperature: float = 0.02

    @property
    def window(self) -> timedelta | None:
        h = self.attribution_window_hours
        return None if h is None else timedelta(hours=h)


# ----------------------------------------------------------------------------- data


def _actor_maps(frame: pd.DataFrame, lookup: HistoricalLookup | None) -> tuple[list[dict[str, float]], str]:
    logged = logged_actor_maps(frame)
    if logged is not None:
        return logged, "logged"
    if lookup is not None:
        entity = pd.DataFrame({"member_id": frame["member_id"].astype(str).to_numpy(),
                               "event_timestamp": pd.to_datetime(frame["decided_at"], utc=True).to_numpy()})
        members = lookup(entity)
        return [dict(m.actor_affinity) if m is not None else {} for m in members], "feast"
    return [{} for _ in range(len(frame))], "none"


def candidate_matrix(
    logged_x: np.ndarray,
    index: CatalogIndex,
    image_rows: np.ndarray,
    segment: np.ndarray,
    actor_maps: list[dict[str, float]] | None,
) -> np.ndarray:
    """Feature rows of candidate images rebuilt from logged feature vectors.

    The logged vector's context columns are kept and the rest is built by
    `keyart.core.featurize.candidate_rows`, the code that built the served rows.

    Args:
        logged_x: shape (n, >= index.space.context_width), logged vector of each decision.
        image_rows: shape (m,), `index.image_matrix` row of each candidate.
        segment: shape (m,), decision (row of logged_x) of each candidate.
        actor_maps: per decision, actor -> affinity (None or {}: cast crosses 0).
    """
    return candidate_rows(index, logged_x, segment, image_rows, actor_maps)


def keyart_bandit_data(
    frame: pd.DataFrame,
    index: CatalogIndex,
    min_minutes: float,
    attribution_window: timedelta | None = None,
    lookup: HistoricalLookup | None = None,
    source: str = "log",
) -> tuple[BanditData, dict[str, int]]:
    """BanditData (with rebuilt candidate features) from logged Keyart decisions."""
    has = frame["features"].map(lambda v: v is not None and len(v) > 0).to_numpy()
    fallback = frame["fallback_reason"].fillna("").astype(str).ne("").to_numpy() if (
        "fallback_reason" in frame.columns) else np.zeros(len(frame), bool)
    catalog = index.catalog
    pools = {t: catalog.pool(t) for t in catalog.titles}
    in_pool = np.array([img in pools.get(t, ()) for t, img in zip(frame["title_id"], frame["image_id"])], bool)
    keep = has & ~fallback & in_pool
    dropped = {"fallback_or_no_features": int((~has | fallback).sum()),
               "image_not_in_pool": int((has & ~fallback & ~in_pool).sum())}
    sub = frame[keep].reset_index(drop=True)
    space = index.space
    bad = sub.index[sub["feature_schema"] != space.schema_id]
    if len(bad):
        raise DatasetError(f"{source}: column feature_schema, row {int(np.flatnonzero(keep)[bad[0]])}: "
                           f"{sub.loc[bad[0], 'feature_schema']!r} is not {space.schema_id!r}, and no known "
                           f"feature space translates it; re-featurize first")
    width = len(space.names)
    logged_x = np.stack(sub["features"].to_numpy()).astype(np.float32) if len(sub) else np.zeros(
        (0, width), np.float32)
    if logged_x.shape[1] != width:
        raise DatasetError(f"{source}: column features has {logged_x.shape[1]} values, expected {width}")
    cand_lists = [pools[t] for t in sub["title_id"]]
    sizes = np.array([len(c) for c in cand_lists], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    flat_ids = np.array([i for c in cand_lists for i in c], dtype=object)
    logged = offsets[:-1] + np.array([c.index(img) for c, img in zip(cand_lists, sub["image_id"])], np.int64)
    segment = np.repeat(np.arange(len(sub)), sizes)
    actor_maps, actor_source = _actor_maps(sub, lookup)
    image_rows = np.array([index.image_row[i] for i in flat_ids], dtype=np.int64)
    x = candidate_matrix(logged_x, index, image_rows, segment, actor_maps)

    built: dict[str, np.ndarray] = {space.schema_id: x}

    def x_in(other: FeatureSpace) -> np.ndarray:
        # The same candidates in another model's space: context translated, the rest rebuilt.
        if other.schema_id not in built:
            other_index = CatalogIndex.build(catalog, other)
            rows = np.array([other_index.image_row[i] for i in flat_ids], dtype=np.int64)
            built[other.schema_id] = candidate_rows(other_index, translate_context(logged_x, space, other),
                                                    segment, rows, actor_maps)
        return built[other.schema_id]
    notes = []
    if actor_source == "none":
        notes.append("cast_affinity/max_cast_affinity/cast_known/max_cast_views set to 0 for all candidates: "
                     "member actor affinities were neither logged (top_actors/top_actor_weights) "
                     "nor looked up in Feast")
    groups = pd.DataFrame({
        "country": sub["country"].astype(str) if "country" in sub else "",
        "device": sub["device"].astype(str) if "device" in sub else "",
        "title_interacted": np.where(logged_x[:, space.index["title_interacted"]] > 0, "interacted",
                                     "not_interacted"),
        "title_id": sub["title_id"].astype(str),
        "member_id": sub["member_id"].astype(str),
    })
    data = BanditData(
        reward=quality_labels(sub, min_minutes, attribution_window),
        propensity=sub["propensity"].to_numpy(float),
        offsets=offsets,
        logged=logged,
        candidates=flat_ids,
        uniform=(sub["policy"].astype(str) == "uniform").to_numpy(),
        groups=groups,
        x=x,
        time=pd.to_datetime(sub["decided_at"], utc=True).to_numpy(),
        notes=notes,
        x_in=x_in,
    )
    return data, dropped


def noncontextual_rates(title: np.ndarray, image: np.ndarray, reward: np.ndarray, propensity: np.ndarray,
                        prior_rows: float = 20.0) -> dict:
    """Per-image take rates from logged (title, image, reward, propensity): the non-contextual bandit.

    Per image, self-normalized IPS over the decisions that showed it:
    sum(r / p) / sum(1 / p) (the plain take rate under uniform logging), shrunk
    toward its title's mean take rate by `prior_rows` pseudo-decisions of typical
    weight.
    """
    inv = 1.0 / np.asarray(propensity, dtype=float)
    y = np.asarray(reward, dtype=float)
    df = pd.DataFrame({"title": np.asarray(title).astype(str), "image": np.asarray(image).astype(str),
                       "wr": y * inv, "w": inv, "r": y})
    per_title = df.groupby("title").agg(mean=("r", "mean"), typical_w=("w", "median"))
    per_image = df.groupby(["title", "image"])[["wr", "w"]].sum().reset_index().join(per_title, on="title")
    prior = prior_rows * per_image["typical_w"]
    scores = (per_image["wr"] + prior * per_image["mean"]) / (per_image["w"] + prior)
    out: dict = dict(zip(per_image["image"], scores.astype(float)))
    out["__title_mean__"] = per_title["mean"].to_dict()
    return out


def fit_noncontextual(frame: pd.DataFrame, min_minutes: float, window: timedelta | None,
                      prior_rows: float = 20.0) -> dict:
    """The non-contextual bandit's per-image take rates from a logged frame (see `noncontextual_rates`).

    Only the logged image, propensity and outcome are needed.
    """
    return noncontextual_rates(frame["title_id"].to_numpy(), frame["image_id"].to_numpy(),
                               quality_labels(frame, min_minutes, window), frame["propensity"].to_numpy(float),
                               prior_rows)


def fit_noncontextual_data(data: BanditData, rows: np.ndarray, prior_rows: float = 20.0) -> dict:
    """The non-contextual bandit fitted on rows `rows` of bandit data (a cross-fitting fold)."""
    rows = np.asarray(rows, dtype=np.int64)
    return noncontextual_rates(data.groups["title_id"].to_numpy()[rows], data.candidates[data.logged[rows]],
                               data.reward[rows], data.propensity[rows], prior_rows)


def noncontextual_flat_scores(fitted: dict, data: BanditData) -> np.ndarray:
    """Flat candidate scores of the non-contextual bandit (unseen images: title mean)."""
    title_mean = fitted.get("__title_mean__", {})
    titles = pd.Series(data.groups["title_id"].to_numpy()[data.segment]).astype(str)
    rates = {k: v for k, v in fitted.items() if k != "__title_mean__"}
    scores = pd.Series(data.candidates).astype(str).map(rates)
    return scores.fillna(titles.map(title_mean)).fillna(0.0).to_numpy(np.float64)


def fit_reward_model(x: np.ndarray, y: np.ndarray, decided: np.ndarray, seed: int = 0, num_threads: int = 1,
                     space: FeatureSpace | None = None):
    """LightGBM P(quality play) for DR's direct-method term; returns predict(x)."""
    from keyart_training.train import TrainConfig, train_quality_model

    cfg = TrainConfig(ensemble_size=0, max_rounds=200, num_leaves=15, learning_rate=0.08,
                      min_data_in_leaf=max(5, min(50, len(y) // 50)), seed=seed, num_threads=num_threads)
    return train_quality_model(x, y, decided, config=cfg, space=space).predict


def model_features(model: QualityPlayModel, data: BanditData) -> np.ndarray:
    """The candidates' features in the model's own space (data.x when it is the log's)."""
    assert data.x is not None
    return data.x if data.x_in is None else data.x_in(model.space)


def served_probs(model: QualityPlayModel, scores: np.ndarray, flat_ids: list[str], data: BanditData,
                 cfg: EvalConfig) -> np.ndarray:
    """Flat choice probabilities of `model` under the serving policy (keyart.core.policies),
    title by title: the exploration the served policy really has."""
    from keyart.core import policies as pol

    ensemble = (model.predict_ensemble(model_features(model, data), flat_ids)
                if cfg.served_policy == "thompson" and model.has_ensemble and data.x is not None else None)
    out = np.zeros(len(scores))
    for lo, hi in zip(data.offsets[:-1], data.offsets[1:]):
        s = scores[lo:hi]
        if cfg.served_policy == "greedy":
            p = pol.greedy(s)
        elif cfg.served_policy == "uniform":
            p = pol.uniform(hi - lo)
        elif cfg.served_policy == "softmax":
            p = pol.softmax(s, cfg.softmax_temperature)
        elif cfg.served_policy == "thompson" and ensemble is not None:
            p = pol.thompson(ensemble[:, lo:hi], cfg.epsilon, s)
        else:
            p = pol.epsilon_greedy(s, cfg.epsilon)
        out[lo:hi] = p
    return out


def member_folds(data: BanditData, k: int, seed: int = 0) -> np.ndarray:
    """Fold (0..k-1) of every row; all decisions of a member fall in one fold.

    Without a member_id column the items of one slate (slate_id) share a fold; without
    either, rows are assigned one by one.
    """
    for col in ("member_id", "slate_id"):
        if col in data.groups.columns and len(data.groups):
            codes, uniques = pd.factorize(data.groups[col].astype(str))
            perm = np.random.default_rng(seed).permutation(len(uniques))
            return (perm[codes] % k).astype(np.int64)
    return (np.random.default_rng(seed).permutation(data.n) % k).astype(np.int64)


def crossfit_noncontextual(data: BanditData, folds: np.ndarray, prior_rows: float = 20.0) -> np.ndarray:
    """Flat scores of the non-contextual bandit, each row's fitted on the other folds."""
    out = np.zeros(len(data.candidates))
    seg = data.segment
    for j in np.unique(folds):
        fitted = fit_noncontextual_data(data, np.flatnonzero(folds != j), prior_rows)
        flat = folds[seg] == j
        out[flat] = noncontextual_flat_scores(fitted, data)[flat]
    return out


def crossfit_reward_model(data: BanditData, folds: np.ndarray, seed: int = 0,
                          space: FeatureSpace | None = None) -> np.ndarray:
    """Flat DR reward-model predictions, each row's from a model fitted on the other folds
    (cross-fitting, as Open Bandit Pipeline's `RegressionModel.fit_predict(n_folds=k)`)."""
    assert data.x is not None
    out = np.zeros(len(data.candidates))
    seg = data.segment
    x_logged = data.x[data.logged]
    times = data.time if data.time is not None else np.arange(data.n)
    for j in np.unique(folds):
        train = folds != j
        predict = fit_reward_model(x_logged[train], data.reward[train], times[train], seed + int(j), space=space)
        flat = folds[seg] == j
        out[flat] = predict(data.x[flat])
    return out


# ----------------------------------------------------------------------------- evaluation


@dataclass
class PolicyView:
    """A target policy as the estimators see it."""

    name: str
    probs: np.ndarray  # flat over candidates
    rhat: np.ndarray | None  # flat DM predictions used for this policy
    info: dict[str, Any] = field(default_factory=dict)
    # A policy chosen from the log itself (best_action): row weights of one bootstrap
    # resample -> its flat probs chosen again on that resample, so the interval carries
    # the choice's own uncertainty, not only the scoring's.
    rechoose: Callable[[np.ndarray], np.ndarray] | None = None


def estimate_policies(
    data: BanditData,
    policies: list[PolicyView],
    cfg: EvalConfig,
    compare: tuple[str, str] | None = None,
) -> dict[str, Any]:
    """Estimates (overall and per breakdown) for each policy, with paired lifts."""
    counts = bootstrap_counts(data.n, cfg.bootstrap, cfg.seed, bootstrap_clusters(data)) if cfg.bootstrap else None
    overall: dict[str, dict[str, Any]] = {}
    raw: dict[str, dict] = {}
    for pol in policies:
        est = estimate(data, pol.probs, pol.rhat, counts, cfg.clip, cfg.confidence, cfg.estimators)
        if pol.rechoose is not None and counts is not None:
            est = _rechosen(data, pol, est, counts, cfg)
        raw[pol.name] = est
        overall[pol.name] = {k: v.as_dict() for k, v in est.items()}
    logged = {"value": float(np.mean(data.reward)) if data.n else float("nan"), "n": data.n}
    lifts: dict[str, Any] = {}
    names = [p.name for p in policies]
    pairs = [compare] if compare else []
    pairs += [(a, "random") for a in names if a != "random" and "random" in names]
    for a, b in pairs:
        if a in raw and b in raw:
            lifts[f"{a}_vs_{b}"] = {k: difference(raw[a][k], raw[b][k], cfg.confidence)
                                    for k in raw[a] if k in raw[b]}
    breakdowns: dict[str, dict[str, Any]] = {}
    for col, value, rows in iter_groups(data, list(cfg.breakdowns)):
        cell = breakdowns.setdefault(col, {}).setdefault(value, {"n": int(len(rows)), "policies": {}})
        for pol in policies:
            est = estimate(data, pol.probs, pol.rhat, counts, cfg.clip, cfg.confidence, cfg.estimators,
                           rows=rows)
            cell["policies"][pol.name] = {k: v.as_dict() for k, v in est.items()}
    return {
        "rows": data.n,
        "uniform_rows": int(data.uniform.sum()),
        "logged_policy": logged,
        "policies": overall,
        "policy_info": {p.name: p.info for p in policies},
        "lifts": lifts,
        "breakdowns": breakdowns,
        "notes": list(data.notes),
    }


def _rechosen(data: BanditData, pol: PolicyView, est: dict[str, Estimate], counts: np.ndarray,
              cfg: EvalConfig) -> dict[str, Estimate]:
    """`est` with bootstrap replicates whose policy was chosen again on each resample."""
    assert pol.rechoose is not None
    boots: dict[str, list[float]] = {k: [] for k in est}
    for b in range(len(counts)):
        probs_b = pol.rechoose(counts[b])
        one = estimate(data, probs_b, pol.rhat, counts[b:b + 1], cfg.clip, cfg.confidence, tuple(est))
        for k in est:
            boots[k].append(float(one[k].boot[0]) if k in one and len(one[k].boot) else float("nan"))
    out = {}
    for k, e in est.items():
        boot = np.array(boots[k])
        lo, hi = percentile_interval(boot, cfg.confidence)
        out[k] = replace(e, lo=lo, hi=hi, boot=boot)
    return out


class InSampleError(DatasetError):
    """Evaluation would score a model on the decisions it learned from."""


@dataclass
class EvalSplit:
    """Which logged rows are scored and which fit the baselines."""

    held: pd.DataFrame  # rows every estimate is computed on
    fit: pd.DataFrame  # older rows, disjoint from `held` (may be empty)
    cutoff: pd.Timestamp | None  # scored rows are decided strictly after it
    rule: str  # how the split was made
    in_sample: list[str] = field(default_factory=list)  # models whose training rows may be among `held`
    windows: dict[str, dict[str, Any] | None] = field(default_factory=dict)


def split_for_evaluation(frame: pd.DataFrame, models: dict[str, QualityPlayModel], fit_share: float,
                         allow_in_sample: bool = False, source: str = "log") -> EvalSplit:
    """Scored rows: decisions strictly after the training window of every model (meta.json).

    With models, the rows up to the latest window end are not scored; they fit the
    baselines. Without models, the oldest `fit_share` (by decision time) fits the
    baselines and the rest is scored. When no decision is later than a model's window,
    or a model records no window, this refuses (InSampleError) unless
    `allow_in_sample`, which scores every row and names the models in-sample.
    """
    frame = frame.sort_values("decided_at", kind="stable").reset_index(drop=True)
    t = decision_times(frame)
    windows = {name: TrainingWindow.of_meta(m.meta) for name, m in models.items()}
    described: dict[str, dict[str, Any] | None] = {
        name: None if w is None else {"version": models[name].version, **w.as_meta(), "legacy": w.legacy}
        for name, w in windows.items()}
    unknown = [name for name, w in windows.items() if w is None]
    known = {name: w for name, w in windows.items() if w is not None}

    def everything(why: str) -> EvalSplit:
        overlapping = unknown + [n for n, w in known.items() if len(t) and w.decided_until >= t.iloc[0]]
        return EvalSplit(frame, frame.iloc[:0], None, f"all rows, in-sample ({why}; --allow-in-sample)",
                         overlapping, described)

    if unknown:
        name = unknown[0]
        why = (f"{name} model {models[name].version} records no training window in its meta.json, so any "
               f"decision may be one it learned from")
        if not allow_in_sample:
            raise InSampleError(f"{source}: {why}; retrain it with this version of keyart, or pass "
                                f"--allow-in-sample to score it anyway (marked in-sample)")
        return everything(why)
    if known:
        name, w = max(known.items(), key=lambda kv: kv[1].decided_until)
        later = (t > w.decided_until).to_numpy()
        if not later.any():
            why = (f"no decision is later than {w.decided_until.isoformat()}, the end of the training window "
                   f"{w.describe()} of the {name} model {models[name].version}")
            if not allow_in_sample:
                raise InSampleError(
                    f"{source}: {why}: every estimate would score it on decisions it may have learned from; "
                    f"evaluate on newer decisions (keyart train holds out the newest --holdout-share), "
                    f"or pass --allow-in-sample (marks every output in-sample)")
            return everything(why)
        return EvalSplit(frame[later], frame[~later], w.decided_until,
                         f"decisions after the training window of the {name} model {models[name].version}",
                         [], described)
    if fit_share <= 0.0:
        return EvalSplit(frame, frame.iloc[:0], None, "all rows (no model to score; fit_share 0)", [], described)
    split = holdout_split(frame, 1.0 - fit_share, source) if fit_share < 1.0 else None
    if split is None or split.holdout_from is None:
        raise DatasetError(f"{source}: --fit-share {fit_share} leaves no decisions to evaluate")
    return EvalSplit(split.holdout, split.train, utc(split.train["decided_at"].max()),
                     f"newest {1 - fit_share:.0%} of decisions (the oldest {fit_share:.0%} fit the baselines)",
                     [], described)


def _usable(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[frame["features"].map(lambda v: v is not None and len(v) > 0)]


def _iso(value: Any) -> str | None:
    return None if value is None else utc(value).isoformat()


def evaluate_log(
    frame: pd.DataFrame,
    index: CatalogIndex,
    models: dict[str, QualityPlayModel],
    cfg: EvalConfig | None = None,
    lookup: HistoricalLookup | None = None,
    source: str = "log",
) -> dict[str, Any]:
    """Estimate random, non-contextual and each model's greedy policy on a logged frame.

    `models` maps a policy name (e.g. "current", "candidate") to a loaded model. Only
    decisions after every model's training window are scored (`split_for_evaluation`);
    the non-contextual bandit and DR's reward model are fitted on the older rows of the
    log when it holds at least `cfg.min_fit_rows` of them, else cross-fitted in
    `cfg.crossfit_folds` member folds of the scored rows. Either way no baseline is
    fitted on a row it scores.
    """
    cfg = cfg or EvalConfig()
    frame = frame.copy()
    frame["decided_at"] = pd.to_datetime(frame["decided_at"], utc=True)
    split = split_for_evaluation(frame, models, cfg.fit_share, cfg.allow_in_sample, source)
    data, dropped = keyart_bandit_data(split.held.reset_index(drop=True), index, cfg.min_minutes, cfg.window,
                                       lookup, source)
    if data.n == 0:
        raise DatasetError(f"{source}: no usable logged decisions to evaluate after "
                           f"{_iso(split.cutoff) or 'the start'} (dropped: {dropped})")
    assert data.x is not None  # built with candidate features above
    fit_usable = _usable(split.fit)
    if "feature_schema" in fit_usable.columns:  # the reward model learns the scored rows' columns
        fit_usable = fit_usable[fit_usable["feature_schema"].astype(str) == index.space.schema_id]
    need_lgb = cfg.reward_model == "lightgbm" or not models
    if len(fit_usable) >= cfg.min_fit_rows:
        nc_scores = noncontextual_flat_scores(
            fit_noncontextual(fit_usable, cfg.min_minutes, cfg.window, cfg.prior_rows), data)
        rhat_lgb = None
        if need_lgb:
            fx = np.stack(fit_usable["features"].to_numpy()).astype(np.float32)
            fy = quality_labels(fit_usable, cfg.min_minutes, cfg.window)
            rhat_lgb = fit_reward_model(fx, fy, fit_usable["decided_at"].to_numpy(), cfg.seed,
                                        space=index.space)(data.x)
        baselines: dict[str, Any] = {"fitted_on": "older rows of the log (before every scored decision)",
                     "rows": int(len(fit_usable)), "decided_from": _iso(fit_usable["decided_at"].min()),
                     "decided_until": _iso(fit_usable["decided_at"].max())}
    else:
        folds = member_folds(data, cfg.crossfit_folds, cfg.seed)
        nc_scores = crossfit_noncontextual(data, folds, cfg.prior_rows)
        rhat_lgb = crossfit_reward_model(data, folds, cfg.seed, index.space) if need_lgb else None
        baselines = {"fitted_on": f"cross-fitted in {cfg.crossfit_folds} member folds of the scored rows "
                                  f"(each row's baselines fitted on the other folds)",
                     "rows": int(data.n), "older_rows_available": int(len(fit_usable))}
    flat_ids = [str(i) for i in data.candidates]
    model_preds = {name: m.predict(model_features(m, data), flat_ids) for name, m in models.items()}
    default_rhat = rhat_lgb if rhat_lgb is not None else model_preds[list(models)[-1]]
    policies = [
        PolicyView("random", uniform_probs(data), default_rhat, {"kind": "uniform over the pool"}),
        PolicyView("non_contextual", argmax_probs(nc_scores, data), default_rhat,
                   {"kind": f"best image per title (IPS take rate, {baselines['fitted_on']})"}),
    ]
    for name, m in models.items():
        rhat = model_preds[name] if cfg.reward_model == "self" else default_rhat
        policies.append(PolicyView(name, argmax_probs(model_preds[name], data), rhat,
                                   {"kind": "greedy on the model", "version": m.version}))
        policies.append(PolicyView(f"{name}_served", served_probs(m, model_preds[name], flat_ids, data, cfg), rhat,
                                   {"kind": f"the model as served: {cfg.served_policy} (epsilon {cfg.epsilon}, "
                                            f"temperature {cfg.softmax_temperature}); page diversity and the "
                                            f"new-image floor not applied", "version": m.version}))
    compare = ("candidate", "current") if {"candidate", "current"} <= set(models) else None
    assert data.time is not None
    sample = {
        "in_sample": bool(split.in_sample),
        "in_sample_models": list(split.in_sample),
        "rule": split.rule,
        "after": _iso(split.cutoff),
        "decided_from": _iso(data.time.min()),
        "decided_until": _iso(data.time.max()),
        "rows": int(data.n),
        "members": int(data.groups["member_id"].nunique()),
        "model_windows": split.windows,
        "baselines": baselines,
    }
    if split.in_sample:
        names = ", ".join(f"{n} ({models[n].version})" for n in split.in_sample)
        data.notes.insert(0, f"IN-SAMPLE: {names} may have been trained on the scored decisions "
                             f"({split.rule}); these estimates are optimistic and cannot promote a model")
    result = estimate_policies(data, policies, cfg, compare)
    result.update(
        source=source,
        config=asdict(cfg),
        dropped=dropped,
        fit_rows=int(len(fit_usable)),
        reward_model=cfg.reward_model,
        feature_schema=index.space.schema_id,
        in_sample=bool(split.in_sample),
        sample=sample,
    )
    return result


# ----------------------------------------------------------------------------- profiles (Figure 3)


PROFILE_GENRES: tuple[str, ...] = ("comedy", "romance", "action", "horror")


def contrasting_profiles(
    frame: pd.DataFrame,
    index: CatalogIndex,
    model: QualityPlayModel,
    n_titles: int = 5,
    genres: tuple[str, ...] = PROFILE_GENRES,
) -> dict[str, Any]:
    """The image the model picks for members of contrasting tastes, on the same titles.

    Members: for each genre, the logged member with the largest logged affinity for
    it (their latest logged vector gives member columns). Titles: the pools with the
    most distinct tones. Device TV, member's logged country. Genres the catalog does
    not have are skipped (default: a few demo genres; pass the catalog's own).
    """
    space = index.space
    usable = frame[frame["features"].map(lambda v: v is not None and len(v) > 0)]
    usable = usable[usable["feature_schema"].astype(str) == space.schema_id]
    if not len(usable):
        return {"titles": [], "profiles": []}
    x = np.stack(usable["features"].to_numpy()).astype(np.float32)
    if model.space is not None and model.space != space:
        x = translate_context(x, space, model.space)
        space = model.space
        index = CatalogIndex.build(index.catalog, space)
    col = space.index
    genre_cols = list(space.genre_columns)
    catalog = index.catalog

    def variety(tid: str) -> tuple[int, int, str]:
        pool = catalog.pool(tid)
        return (len({catalog.images[i].tone for i in pool}), len(pool), tid)

    titles = sorted(catalog.titles, key=variety, reverse=True)[:n_titles]
    profiles = []
    for g in genres:
        if f"genre_{g}" not in col:
            continue
        share = x[:, col[f"genre_{g}"]] / np.maximum(np.nansum(x[:, genre_cols], axis=1), 1e-6)
        k = int(np.nanargmax(share)) if np.isfinite(share).any() else 0
        base = x[k, : space.context_width].copy()
        base[col["device"]] = space.code("device", "TV")
        row = usable.iloc[k]
        actors = {}
        if "top_actors" in usable.columns:
            actors = {str(a): float(w) for a, w in zip(row["top_actors"], row["top_actor_weights"])}
        pools = [list(catalog.pool(t)) for t in titles]
        flat = [i for p in pools for i in p]
        seg = np.repeat(np.arange(len(titles)), [len(p) for p in pools])
        logged = np.repeat(base[None, :], len(titles), axis=0)
        genre_vec = np.nan_to_num(base[genre_cols])
        for j, t in enumerate(titles):
            logged[j, col["title_interacted"]] = 0.0
            logged[j, col["title_genre_affinity"]] = float(index.title_genres[index.title_row[t]] @ genre_vec)
            logged[j, col["pool_size"]] = float(index.title_pool_size[index.title_row[t]])
        rows = np.array([index.image_row[i] for i in flat])
        cx = candidate_matrix(logged, index, rows, seg, [actors] * len(titles))
        scores = model.predict(cx, flat)
        picks = []
        for j, t in enumerate(titles):
            idx = np.flatnonzero(seg == j)
            best = flat[idx[int(np.argmax(scores[idx]))]]
            im = catalog.images[best]
            picks.append({"title_id": t, "image_id": best, "tone": im.tone, "style": im.style,
                          "expression": im.expression, "num_faces": im.num_faces,
                          "cast_shown": list(im.cast_shown), "score": float(scores[idx].max())})
        top = sorted(zip(space.genres, genre_vec.tolist()), key=lambda kv: -kv[1])[:2]
        profiles.append({"taste": g, "member_id": str(row["member_id"]),
                         "country": space.value("country", float(base[col["country"]])), "device": "TV",
                         "top_genres": [(a, round(float(b), 2)) for a, b in top], "picks": picks})
    return {"titles": titles, "profiles": profiles, "model_version": model.version}
