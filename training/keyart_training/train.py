"""Train the LightGBM quality-play model (and its bootstrap ensemble) from logged data.

A quality play needs two things of the member: to start the play, and to stay until
it counts. The model has one head per step (start: P(play | shown), on every
decision; stay: P(quality | play), on the decisions that started a play) and predicts
their product. Measured on the bench-quality worlds (bench/quality), the two heads
chose better than one head on the quality label in all three (closure 0.32 / 0.42 /
0.57 against 0.27 / 0.28 / 0.48): the start head learns from every play, not only the
rare quality ones, and the stay head sees through images that start plays members
abandon (clickbait). Logs without a `started` column train the single head.

Validation is time-based (the newest share of decisions), because the model will
serve the future, not a random shuffle of the past. Each head's hyper-parameters are
chosen from a small grid by log-loss on that newest slice; calibration and the
non-contextual bandit's log-loss on the same slice are reported, so a model that
learned less than a per-image rate says so.

Each head starts its trees from per-image logit offsets (the image's own rate, shrunk).
With the rows' titles, the newest slice also weighs how much of each offset's
difference from its title's other images the trees should sit on (`offset_contrast`):
the shrinkage is chosen for the whole log-loss, mostly between titles, while choosing
among a title's images looks only at those differences. Measured with
bench/quality/retrain.py (two LightGBM seeds each, closure before -> after): star_power
0.561 -> 0.595 and 0.534 -> 0.575, small_screens 0.547 -> 0.610 and 0.573 -> 0.616,
genre_lens 0.382 -> 0.393.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import lightgbm as lgb
import numpy as np
from scipy.stats import rankdata

from keyart.core.feature_space import FeatureSpace
from keyart.core.model import QualityPlayModel


@dataclass(frozen=True)
class TrainConfig:
    """LightGBM and ensemble settings."""

    num_leaves: int = 15
    learning_rate: float = 0.05
    max_rounds: int = 600
    early_stopping_rounds: int = 40
    min_data_in_leaf: int = 100
    lambda_l2: float = 10.0
    # LightGBM's extremely randomized trees: each split's threshold drawn at random, the
    # best feature kept. Smoother within-title contrasts on noisy logs, usually more rounds.
    extra_trees: bool = False
    # Each leaf's value shrunk to its parent's with this many pseudo-rows (LightGBM's
    # path_smooth): small leaves of noisy logs say less. Validation log-loss fell with 20 on
    # each of four bench logs (star_power, small_screens; two seeds each).
    path_smooth: float = 20.0
    feature_fraction: float = 0.9  # columns each tree may split on (LightGBM's random subspace)
    bagging_fraction: float = 0.9  # rows each tree is grown on
    validation_share: float = 0.2
    ensemble_size: int = 5  # bootstrap members for Thompson sampling; 0 = none
    # What Thompson's members resample: "offsets", the per-image start offsets on bootstrap
    # rows (the image's own appeal: where the uncertainty about which image lies; costs a
    # table lookup per member at serving), or "forests", both heads refit on bootstrap rows
    # (uncertainty in the contextual trees too; each member is two more forests per page).
    # A model without image offsets always uses forests.
    thompson_posterior: str = "offsets"
    seed: int = 7
    num_threads: int = 0  # 0 = OpenMP default (all cores); 1 is much faster on a busy shared machine
    two_heads: bool = True  # start x stay when the data says which decisions started a play
    # Per-image start offsets (each image's own appeal) shrunk with this many pseudo-rows of
    # the mean; chosen per training by validation log-loss. () = no offsets.
    image_prior_rows: tuple[float, ...] = (30.0, 100.0, 300.0)
    # The same for the stay head's per-image offsets (how well the image's plays last: an
    # image that starts plays members abandon, clickbait, is an image-level trait), learned
    # on the started rows only, so fewer pseudo-rows. () = no stay offsets.
    stay_prior_rows: tuple[float, ...] = (10.0, 30.0, 100.0)
    offset_folds: int = 5  # training rows get offsets cross-fitted from the other folds
    # Weigh the differences between a title's image offsets by what the validation rows
    # say they are worth next to the trees (given the rows' titles); False = weight 1.
    fit_offset_contrast: bool = True
    # Shrink each image's offsets to its lineage siblings' rate (given the rows' lineages).
    pool_lineages: bool = True
    # Alternatives to (num_leaves, min_data_in_leaf) tried per head, chosen by validation log-loss.
    search: tuple[tuple[int, int], ...] = ((7, 200), (31, 50))
    # Also try each of those with `extra_trees` flipped (the grid doubles; chosen the same way).
    search_extra_trees: bool = True


@dataclass
class TrainResult:
    booster: lgb.Booster  # the start head (or the only head)
    space: FeatureSpace | None  # the columns it learned (None: anonymous columns, e.g. a reward model)
    ensemble: list[lgb.Booster] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    stay: lgb.Booster | None = None  # the stay head, when there are two
    ensemble_stay: list[lgb.Booster] = field(default_factory=list)
    image_offsets: dict[str, float] = field(default_factory=dict)  # start-logit offset per image
    stay_offsets: dict[str, float] = field(default_factory=dict)  # stay-logit offset per image
    ensemble_offsets: list[dict[str, float]] = field(default_factory=list)  # Thompson's offset draws

    def as_model(self, version: str, meta: dict | None = None) -> QualityPlayModel:
        return QualityPlayModel(version=version, booster=self.booster, space=self.space, ensemble=self.ensemble,
                                meta=meta or {}, stay=self.stay, ensemble_stay=self.ensemble_stay,
                                image_offsets=self.image_offsets, stay_offsets=self.stay_offsets,
                                ensemble_offsets=list(self.ensemble_offsets))

    def predict(self, x: np.ndarray, image_ids: np.ndarray | None = None) -> np.ndarray:
        """P(quality play) per row (the product of the heads)."""
        return self.as_model("unsaved").predict(x, None if image_ids is None else list(image_ids))


def auc(y: np.ndarray, p: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney), nan when one class is absent."""
    pos = y.astype(bool)
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(p)
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def log_loss(y: np.ndarray, p: np.ndarray) -> float:
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def _params(cfg: TrainConfig, seed: int) -> dict:
    return {
        "objective": "binary",
        "learning_rate": cfg.learning_rate,
        "num_leaves": cfg.num_leaves,
        "min_data_in_leaf": cfg.min_data_in_leaf,
        "lambda_l2": cfg.lambda_l2,
        "feature_fraction": cfg.feature_fraction,
        "extra_trees": cfg.extra_trees,
        "path_smooth": cfg.path_smooth,
        "bagging_fraction": cfg.bagging_fraction,
        "bagging_freq": 1,
        "seed": seed,
        "verbosity": -1,
        "num_threads": cfg.num_threads,
        "deterministic": True,
        "force_row_wise": True,
    }


def _logit(p: np.ndarray | float) -> np.ndarray:
    q = np.clip(np.asarray(p, dtype=np.float64), 1e-6, 1 - 1e-6)
    return np.log(q / (1 - q))


def image_offsets(image_ids: np.ndarray, y: np.ndarray, rows: np.ndarray, prior_rows: float,
                  lineage_of: Mapping[str, str] | None = None) -> dict[str, float]:
    """Each image's own appeal on `rows`: logit of its rate shrunk with `prior_rows`
    pseudo-rows, minus the mean's logit.

    Without `lineage_of` an image shrinks to the mean rate. With it (image -> lineage id:
    versions of one artwork, such as crops and text variants) it shrinks to its siblings'
    pooled rate, itself shrunk to the mean the same way: versions of one artwork share
    most of its appeal, so each learns from the others' rows. An image alone in its
    lineage gets exactly what it would without. Images `lineage_of` names that `rows`
    never showed get their siblings' rate: a new crop starts where its artwork stands.
    """
    if not len(rows):
        return {}
    keys, inv = np.unique(np.asarray(image_ids)[rows].astype(str), return_inverse=True)
    mean = float(np.mean(y[rows]))
    pos = np.bincount(inv, weights=y[rows], minlength=len(keys))
    cnt = np.bincount(inv, minlength=len(keys)).astype(np.float64)
    if not lineage_of:
        off = _logit((pos + prior_rows * mean) / (cnt + prior_rows)) - _logit(mean)
        return dict(zip(keys.tolist(), off.tolist()))
    seen = set(keys.tolist())
    unseen = [i for i, lineage in lineage_of.items() if i not in seen]
    names = np.array(keys.tolist() + unseen, dtype=object)
    pos = np.concatenate([pos, np.zeros(len(unseen))])
    cnt = np.concatenate([cnt, np.zeros(len(unseen))])
    _, lin = np.unique(np.array([lineage_of.get(i, i) for i in names], dtype=str), return_inverse=True)
    sib_pos = np.bincount(lin, weights=pos)[lin] - pos
    sib_cnt = np.bincount(lin, weights=cnt)[lin] - cnt
    siblings = (sib_pos + prior_rows * mean) / (sib_cnt + prior_rows)
    off = _logit((pos + prior_rows * siblings) / (cnt + prior_rows)) - _logit(mean)
    keep = (cnt > 0) | (sib_cnt > 0)
    return dict(zip(names[keep].tolist(), off[keep].tolist()))


def _apply(offsets: dict[str, float], image_ids: np.ndarray) -> np.ndarray:
    get = offsets.get
    return np.fromiter((get(str(i), 0.0) for i in image_ids), dtype=np.float64, count=len(image_ids))


def crossfit_offsets(image_ids: np.ndarray, y: np.ndarray, rows: np.ndarray, prior_rows: float,
                     folds: int, seed: int, lineage_of: Mapping[str, str] | None = None) -> np.ndarray:
    """Offsets of `rows`, each from the other folds' rows: a row's own label never sets its offset."""
    out = np.zeros(len(rows))
    fold = np.random.default_rng(seed).permutation(len(rows)) % folds
    for k in range(folds):
        out[fold == k] = _apply(image_offsets(image_ids, y, rows[fold != k], prior_rows, lineage_of),
                                np.asarray(image_ids)[rows[fold == k]])
    return out


def _dataset(space: FeatureSpace | None, x: np.ndarray, y: np.ndarray, w: np.ndarray | None,
             init: np.ndarray | None = None) -> lgb.Dataset:
    return lgb.Dataset(
        x,
        label=y,
        weight=w,
        init_score=init,
        feature_name=list(space.names) if space is not None else "auto",
        categorical_feature=list(space.categorical) if space is not None else "auto",
        free_raw_data=False,
    )


def time_split(decided_at: np.ndarray, validation_share: float) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (train, valid): the newest `validation_share` of decisions validate.

    Rows are ordered by decision time (stable for ties), so every validation row is
    decided at or after every training row.
    """
    order = np.argsort(np.asarray(decided_at), kind="stable")
    cut = int(len(order) * (1.0 - validation_share))
    return order[:cut], order[cut:]


def calibration(y: np.ndarray, p: np.ndarray, bins: int = 10) -> dict:
    """Expected calibration error over equal-count bins, and the bins (mean predicted, observed)."""
    if not len(y):
        return {"ece": float("nan"), "bins": []}
    order = np.argsort(p, kind="stable")
    out, ece = [], 0.0
    for part in np.array_split(order, min(bins, len(order))):
        pred, seen = float(np.mean(p[part])), float(np.mean(y[part]))
        ece += len(part) / len(order) * abs(pred - seen)
        out.append({"rows": int(len(part)), "predicted": round(pred, 5), "observed": round(seen, 5)})
    return {"ece": float(ece), "bins": out}


def image_rate_logloss(image_tr: np.ndarray, y_tr: np.ndarray, image_va: np.ndarray, y_va: np.ndarray,
                       prior: float = 10.0) -> float:
    """Validation log-loss of the non-contextual bandit: per-image rate, shrunk to the mean."""
    mean = float(np.mean(y_tr)) if len(y_tr) else 0.0
    keys, inv = np.unique(np.asarray(image_tr).astype(str), return_inverse=True)
    pos = np.bincount(inv, weights=y_tr, minlength=len(keys))
    cnt = np.bincount(inv, minlength=len(keys))
    rate = dict(zip(keys, (pos + prior * mean) / (cnt + prior)))
    p = np.array([rate.get(str(i), mean) for i in image_va])
    return log_loss(y_va, p)


def _fit_head(space: FeatureSpace | None, x: np.ndarray, y: np.ndarray, w: np.ndarray | None, tr: np.ndarray,
              va: np.ndarray,
              cfg: TrainConfig, init: np.ndarray | None = None,
              grid: list[TrainConfig] | None = None) -> tuple[TrainConfig, int, float, lgb.Booster]:
    """Best config of the grid for one head: (config, rounds, validation log-loss, booster on `tr`).

    `init` (shape (n,)) is a per-row logit offset the trees start from (image offsets).
    """
    best: tuple[TrainConfig, int, float, lgb.Booster] | None = None
    if grid is None:
        grid = [cfg] + [replace(cfg, num_leaves=leaves, min_data_in_leaf=md) for leaves, md in cfg.search]
        if cfg.search_extra_trees:
            grid += [replace(c, extra_trees=not c.extra_trees) for c in grid]
    for c in grid:
        train_set = _dataset(space, x[tr], y[tr], None if w is None else w[tr], None if init is None else init[tr])
        valid_set = _dataset(space, x[va], y[va], None if w is None else w[va], None if init is None else init[va])
        booster = lgb.train(
            _params(c, c.seed),
            train_set,
            num_boost_round=c.max_rounds,
            valid_sets=[valid_set],
            valid_names=["valid"],
            callbacks=[lgb.early_stopping(c.early_stopping_rounds, verbose=False)],
        )
        rounds = max(1, booster.best_iteration or c.max_rounds)
        loss = log_loss(y[va], _head_p(booster, x[va], rounds, None if init is None else init[va]))
        if best is None or loss < best[2]:
            best = (c, rounds, loss, booster)
    assert best is not None
    return best


def _head_p(booster: lgb.Booster, x: np.ndarray, rounds: int, init: np.ndarray | None) -> np.ndarray:
    if init is None:
        return np.asarray(booster.predict(x, num_iteration=rounds), dtype=np.float64)
    raw = np.asarray(booster.predict(x, num_iteration=rounds, raw_score=True), dtype=np.float64) + init
    return 1.0 / (1.0 + np.exp(-raw))


def _refit(space: FeatureSpace | None, x: np.ndarray, y: np.ndarray, w: np.ndarray | None, cfg: TrainConfig,
           rounds: int,
           rows: np.ndarray, init: np.ndarray | None = None,
           members: int | None = None) -> tuple[lgb.Booster, list[lgb.Booster]]:
    """The head refit on `rows` with the chosen rounds, and its bootstrap ensemble
    (`members` forests; default the config's ensemble size)."""
    def fit(idx: np.ndarray, seed: int) -> lgb.Booster:
        return lgb.train(_params(cfg, seed), _dataset(space, x[idx], y[idx], None if w is None else w[idx],
                                                      None if init is None else init[idx]),
                         num_boost_round=rounds)

    final = fit(rows, cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    ensemble = [fit(rows[rng.integers(0, len(rows), size=len(rows))], cfg.seed + 1 + k)
                for k in range(cfg.ensemble_size if members is None else members)]
    return final, ensemble


def bootstrap_offsets(image_ids: np.ndarray, y: np.ndarray, prior_rows: float, members: int,
                      seed: int, lineage_of: Mapping[str, str] | None = None) -> list[dict[str, float]]:
    """Thompson's posterior draws of the per-image offsets: each from a bootstrap of the rows."""
    rng = np.random.default_rng(seed)
    n = len(y)
    return [image_offsets(image_ids, y, rng.integers(0, n, size=n), prior_rows, lineage_of) for _ in range(members)]


# A priori the offsets' within-title differences are worth their face value, give or take
# this much: a weight fitted on few rows (a small stay head) stays near 1.
CONTRAST_PRIOR_SD = 0.5


def within_title_deviation(offsets: dict[str, float], title_of: dict[str, str],
                           image_ids: np.ndarray) -> np.ndarray:
    """Per row: its image's offset minus the mean offset of its title's images (those
    `offsets` knows), 0 for an image `offsets` does not know."""
    level = title_levels(offsets, title_of)
    return np.array([offsets[i] - level[title_of[i]] if i in offsets and i in title_of else 0.0
                     for i in np.asarray(image_ids).astype(str)])


def title_levels(offsets: dict[str, float], title_of: dict[str, str]) -> dict[str, float]:
    """Mean offset of each title's images."""
    sums: dict[str, list[float]] = {}
    for image, off in offsets.items():
        if image in title_of:
            sums.setdefault(title_of[image], []).append(off)
    return {t: float(np.mean(v)) for t, v in sums.items()}


def weigh_contrast(offsets: dict[str, float], title_of: dict[str, str], weight: float) -> dict[str, float]:
    """`offsets` with each image's difference from its title's mean offset times `weight`
    (the title's mean is kept; an image of unknown title is kept as it is)."""
    level = title_levels(offsets, title_of)
    return {i: (level[title_of[i]] + weight * (off - level[title_of[i]]) if i in title_of else off)
            for i, off in offsets.items()}


def fit_contrast_weight(y: np.ndarray, logit: np.ndarray, deviation: np.ndarray, w: np.ndarray | None = None,
                        prior_sd: float = CONTRAST_PRIOR_SD, iterations: int = 50) -> tuple[float, float]:
    """(weight, standard error): the weight k of `deviation` that fits `y` best, that is the
    posterior mode of sigmoid(logit + (k - 1) x deviation) under a normal prior on k with
    mean 1 and sd `prior_sd` (little evidence leaves k near 1). Newton's method: convex."""
    weights = np.ones(len(y)) if w is None else np.asarray(w, dtype=np.float64)
    delta, info = 0.0, 0.0
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-(logit + delta * deviation)))
        info = float(np.sum(weights * p * (1 - p) * deviation ** 2)) + 1.0 / prior_sd ** 2
        step = (float(np.sum(weights * (p - y) * deviation)) + delta / prior_sd ** 2) / info
        delta -= step
        if abs(step) < 1e-9:
            break
    return 1.0 + delta, float(1.0 / np.sqrt(info))


def _contrast_weight(booster: lgb.Booster, rounds: int, x: np.ndarray, y: np.ndarray, w: np.ndarray | None,
                     va: np.ndarray, init: np.ndarray, image_ids: np.ndarray, table: dict[str, float],
                     title_of: dict[str, str]) -> tuple[np.ndarray, float, float]:
    """How much of the offsets' within-title differences the validation rows support, given
    the head's trees (fit on the training rows from these offsets; `table`: the training
    rows' offsets, those `init` gives the validation rows).

    Choosing among a title's images looks only at those differences and the trees' share
    of them. The offsets' shrinkage is chosen for the whole log-loss, mostly between
    titles, and can leave an image's difference from its title's other images weighed
    more than the trees' (measured on the bench worlds: 0.53 to 0.85, standard error
    0.05 to 0.10). The validation rows' offsets come from training rows only.

    Returns:
        (`init` with the validation rows' offsets weighed, the weight cross-fitted over two
        halves: no row's own label weighs its offset, so the figures reported on them stay
        honest; the weight in [0, 1.5] from every validation row; its standard error).
    """
    deviation = within_title_deviation(table, title_of, image_ids[va])
    logit = np.asarray(booster.predict(x[va], num_iteration=rounds, raw_score=True), dtype=np.float64) + init[va]
    wv = None if w is None else w[va]

    def fit(rows: np.ndarray) -> tuple[float, float]:
        k, se = fit_contrast_weight(y[va][rows], logit[rows], deviation[rows], None if wv is None else wv[rows])
        return float(np.clip(k, 0.0, 1.5)), se

    weight, se = fit(np.arange(len(va)))
    half = np.arange(len(va)) % 2 == 0
    crossfit = np.where(half, fit(np.flatnonzero(~half))[0], fit(np.flatnonzero(half))[0])
    weighed = init.copy()
    weighed[va] = init[va] + (crossfit - 1.0) * deviation
    return weighed, weight, se


def _choose_image_prior(space: FeatureSpace | None, x: np.ndarray, s: np.ndarray, w: np.ndarray | None,
                        tr: np.ndarray, va: np.ndarray,
                        cfg: TrainConfig, image_ids: np.ndarray | None,
                        priors: tuple[float, ...], lineage_of: Mapping[str, str] | None = None,
                        ) -> tuple[float | None, np.ndarray | None, dict[str, float]]:
    """A head's image-offset shrinkage (of `priors`) with the best validation log-loss on
    label `s` (None: no offsets), the offsets it gives every row (0 outside `tr` and
    `va`): training rows cross-fitted, validation rows from all training rows (never from
    their own labels), and that table of the training rows' offsets."""
    if image_ids is None or not priors or not len(tr) or not len(va):
        return None, None, {}
    ids = np.asarray(image_ids)
    best: tuple[float, float, np.ndarray, dict[str, float]] | None = None
    for prior in priors:
        table = image_offsets(ids, s, tr, prior, lineage_of)
        init = np.zeros(len(s))
        init[tr] = crossfit_offsets(ids, s, tr, prior, cfg.offset_folds, cfg.seed, lineage_of)
        init[va] = _apply(table, ids[va])
        _, _, loss, _ = _fit_head(space, x, s, w, tr, va, cfg, init, grid=[cfg])
        if best is None or loss < best[1]:
            best = (prior, loss, init, table)
    assert best is not None
    return best[0], best[2], best[3]


def train_quality_model(
    x: np.ndarray,
    y: np.ndarray,
    decided_at: np.ndarray,
    weights: np.ndarray | None = None,
    config: TrainConfig | None = None,
    started: np.ndarray | None = None,
    image_ids: np.ndarray | None = None,
    *,
    space: FeatureSpace | None = None,
    title_ids: np.ndarray | None = None,
    lineage_ids: np.ndarray | None = None,
    catalog_lineages: Mapping[str, str] | None = None,
) -> TrainResult:
    """Fit P(quality play) with early stopping on the newest decisions.

    Args:
        x: features, shape (n, len(space.names)).
        space: the feature space of x's columns, stored with the model (None: anonymous
            columns, no categorical ones; such a result predicts but cannot be saved).
        y: 1 for a quality play, shape (n,).
        decided_at: decision times (any sortable dtype), shape (n,).
        weights: optional per-row weights (for example inverse propensities), shape (n,).
        started: 1 where a play started (every quality play did), shape (n,); with it
            (and `config.two_heads`) the model is start x stay.
        image_ids: the image shown per row, for the non-contextual bandit's log-loss.
        title_ids: the title per row; with it (and `config.fit_offset_contrast`) the
            offsets' within-title differences are weighed on the validation rows.
        lineage_ids: the image's lineage per row; with it (and `config.pool_lineages`)
            each image's offsets shrink to its lineage siblings' (`image_offsets`).
        catalog_lineages: image -> lineage of the catalog's images (the rows' own lineages
            win where both name one): a version the log never showed (a new crop or text
            variant) gets its siblings' offsets instead of the mean's.
    """
    if space is not None and x.shape[1] != len(space.names):
        raise ValueError(f"x has {x.shape[1]} columns, the feature space {len(space.names)}")
    cfg = config or TrainConfig()
    if cfg.thompson_posterior not in ("offsets", "forests"):
        raise ValueError(f"thompson_posterior {cfg.thompson_posterior!r} is not 'offsets' or 'forests'")
    tr, va = time_split(decided_at, cfg.validation_share)
    w = None if weights is None else np.asarray(weights, dtype=np.float64)
    everything = np.arange(len(y))
    metrics: dict = {"rows_train": float(len(tr)), "rows_valid": float(len(va))}
    two = cfg.two_heads and started is not None and bool(np.any(started))
    offsets: dict[str, float] = {}
    stay_offsets: dict[str, float] = {}
    ensemble_offsets: list[dict[str, float]] = []
    lineage_of: dict[str, str] | None = None
    if cfg.pool_lineages and (lineage_ids is not None or catalog_lineages) and image_ids is not None:
        lineage_of = {str(i): str(lin) for i, lin in (catalog_lineages or {}).items()}
        if lineage_ids is not None:
            lineage_of.update(zip(np.asarray(image_ids).astype(str).tolist(),
                                  np.asarray(lineage_ids).astype(str).tolist()))
        sizes = Counter(lineage_of.values())
        metrics["images_sharing_a_lineage"] = float(sum(1 for lin in lineage_of.values() if sizes[lin] > 1))
    if two:
        s = np.maximum(np.asarray(started, dtype=np.float64), y)  # a quality play started
        prior, init_sel, table_sel = _choose_image_prior(space, x, s, w, tr, va, cfg, image_ids, cfg.image_prior_rows,
                                                                  lineage_of)
        c_start, r_start, ll_start, b_start = _fit_head(space, x, s, w, tr, va, cfg, init_sel)
        tr_s, va_s = tr[s[tr] > 0], va[s[va] > 0]
        stay_prior, init_stay, table_stay = _choose_image_prior(space, x, y, w, tr_s, va_s, cfg, image_ids,
                                                                cfg.stay_prior_rows, lineage_of)
        c_stay, r_stay, ll_stay, b_stay = _fit_head(space, x, y, w, tr_s, va_s, cfg, init_stay)
        title_of: dict[str, str] = {}
        k_start = k_stay = 1.0
        if cfg.fit_offset_contrast and title_ids is not None and image_ids is not None:
            ids = np.asarray(image_ids).astype(str)
            title_of = dict(zip(ids.tolist(), np.asarray(title_ids).astype(str).tolist()))
            if init_sel is not None:
                init_sel, k_start, se = _contrast_weight(b_start, r_start, x, s, w, va, init_sel, ids, table_sel,
                                                         title_of)
                metrics.update({"offset_contrast": k_start, "offset_contrast_se": se})
            if init_stay is not None:
                init_stay, k_stay, se = _contrast_weight(b_stay, r_stay, x, y, w, va_s, init_stay, ids, table_stay,
                                                         title_of)
                metrics.update({"stay_offset_contrast": k_stay, "stay_offset_contrast_se": se})
        # Validation figures score weighed offsets, as the model serves them.
        p_va = (_head_p(b_start, x[va], r_start, None if init_sel is None else init_sel[va])
                * _head_p(b_stay, x[va], r_stay, None if init_stay is None else init_stay[va]))
        init_all = init_stay_all = None
        started_rows = everything[s > 0]
        if prior is not None and image_ids is not None:
            init_all = crossfit_offsets(image_ids, s, everything, prior, cfg.offset_folds, cfg.seed, lineage_of)
            offsets = weigh_contrast(image_offsets(image_ids, s, everything, prior, lineage_of), title_of, k_start)
        if stay_prior is not None and image_ids is not None:
            init_stay_all = np.zeros(len(y))
            init_stay_all[started_rows] = crossfit_offsets(image_ids, y, started_rows, stay_prior, cfg.offset_folds,
                                                           cfg.seed, lineage_of)
            stay_offsets = weigh_contrast(image_offsets(image_ids, y, started_rows, stay_prior, lineage_of), title_of,
                                          k_stay)
        by_offsets = cfg.thompson_posterior == "offsets" and bool(offsets) and image_ids is not None
        forests = 0 if by_offsets else None
        booster, ensemble = _refit(space, x, s, w, c_start, r_start, everything, init_all, members=forests)
        stay, ensemble_stay = _refit(space, x, y, w, c_stay, r_stay, started_rows, init_stay_all, members=forests)
        if by_offsets:
            assert prior is not None and image_ids is not None
            ensemble_offsets = [weigh_contrast(draw, title_of, k_start) for draw in
                                bootstrap_offsets(np.asarray(image_ids), s, prior, cfg.ensemble_size, cfg.seed + 1,
                                                                  lineage_of)]
        metrics.update({
            "image_prior_rows": float("nan") if prior is None else float(prior),
            "image_offsets": float(len(offsets)),
            "stay_prior_rows": float("nan") if stay_prior is None else float(stay_prior),
            "stay_offsets": float(len(stay_offsets)),
            "heads": "start_x_stay", "rounds": float(r_start), "rounds_stay": float(r_stay),
            "num_leaves": float(c_start.num_leaves), "num_leaves_stay": float(c_stay.num_leaves),
            "extra_trees": c_start.extra_trees, "extra_trees_stay": c_stay.extra_trees,
            "min_data_in_leaf": float(c_start.min_data_in_leaf),
            "min_data_in_leaf_stay": float(c_stay.min_data_in_leaf),
            "valid_logloss_start": ll_start, "valid_logloss_stay": ll_stay,
            "start_rate": float(np.mean(s)),
            "thompson_posterior": "offsets" if ensemble_offsets else "forests",
        })
    else:
        c, rounds, _, b = _fit_head(space, x, y, w, tr, va, cfg)
        p_va = np.asarray(b.predict(x[va], num_iteration=rounds), dtype=np.float64)
        booster, ensemble = _refit(space, x, y, w, c, rounds, everything)
        stay, ensemble_stay = None, []
        metrics.update({"heads": "quality", "rounds": float(rounds), "num_leaves": float(c.num_leaves),
                        "extra_trees": c.extra_trees,
                        "min_data_in_leaf": float(c.min_data_in_leaf)})
    base_rate = float(np.mean(y[tr])) if len(tr) else 0.0
    cal = calibration(y[va], p_va)
    metrics.update({
        "valid_auc": auc(y[va], p_va),
        "valid_logloss": log_loss(y[va], p_va),
        "valid_logloss_base_rate": log_loss(y[va], np.full(len(va), base_rate)),
        "valid_ece": cal["ece"],
        "valid_calibration": cal["bins"],
        "positive_rate": float(np.mean(y)),
    })
    if image_ids is not None:
        ids = np.asarray(image_ids)
        metrics["valid_logloss_non_contextual"] = image_rate_logloss(ids[tr], y[tr], ids[va], y[va])
        # The guard of early stopping: a model no better than a per-image rate must say so.
        metrics["beats_non_contextual"] = bool(metrics["valid_logloss"] < metrics["valid_logloss_non_contextual"])
    # The heads are refit on everything with the chosen rounds: the newest data matters most.
    return TrainResult(booster=booster, space=space, ensemble=ensemble, metrics=metrics, stay=stay,
                       ensemble_stay=ensemble_stay, image_offsets=offsets, stay_offsets=stay_offsets,
                       ensemble_offsets=ensemble_offsets)
