"""Off-policy evaluation of any logged bandit feedback (not only Keyart's log).

Parquet schema (one row per logged decision):

=================  =====================  ===============================================
column             type                   meaning
=================  =====================  ===============================================
action             string or integer      the action the logging policy took (required)
propensity         float, (0, 1]          logging policy's probability of it (required)
reward             float                  observed reward, e.g. 1.0 take / 0.0 (required)
actions            list<same as action>   candidate set of the row; must contain `action`
                                          (needed by random, best_action and DR)
target_probs       list<float>            evaluation policy's probability of each of
                                          `actions` (sums to 1)
target_prob        float, [0, 1]          alternatively: evaluation policy's probability
                                          of the logged `action` (replay, IPS, SNIPS only)
reward_hat         list<float>            reward model's prediction for each of `actions`
                                          (DR's direct-method term)
features           list<float>            context features; without `reward_hat` a LightGBM
                                          reward model on (features, action) is fitted for
                                          DR, cross-fitted (each row's from the other folds)
policy             string                 rows with "uniform" form the replay slice
slate_id           any                    ranked logs: the rows (items) shown together in
                                          one impression share a slate_id (optional)
position           integer >= 0           ranked logs: the item's slot (unique within a
                                          slate_id); a breakdown by default
member_id          any                    who decided; the bootstrap's resampling unit
<anything else>    any                    usable as a breakdown column (`by`)
=================  =====================  ===============================================

Ranked logs (several items per impression) are one row per item, with slate_id and
position; each item is evaluated as a decision in its slot's context (as Open Bandit
Pipeline does with its `position`), and the rows of one slate are resampled together
by the bootstrap and kept in one cross-fitting fold (unless member_id groups them).

Policies: `target` (when target_probs or target_prob is given), `random` and
`best_action` (the action with the best self-normalized IPS take rate: a
non-contextual bandit, chosen for each row on the other `crossfit_folds` folds, so it
is never scored on the rows it was chosen on) when `actions` is given. Folds group
rows by `member_id` when the file has that column (also the bootstrap's resampling
unit), else rows are assigned one by one.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from keyart_training.data.dataset import DatasetError, read_parquet_columns
from keyart_training.ope.estimators import (
    BanditData,
    argmax_probs,
    bootstrap_clusters,
    bootstrap_counts,
    percentile_interval,
    uniform_probs,
)
from keyart_training.ope.evaluate import EvalConfig, PolicyView, estimate_policies, member_folds

REQUIRED: tuple[str, ...] = ("action", "propensity", "reward")


def _numeric(df: pd.DataFrame, col: str, source: str) -> np.ndarray:
    kind = df[col].dtype
    if pd.api.types.is_datetime64_any_dtype(kind) or pd.api.types.is_timedelta64_dtype(kind):
        raise DatasetError(f"{source}: column {col}: is a {kind} column, not a number (a timestamp would be "
                           f"read as nanoseconds)")
    values = pd.to_numeric(df[col], errors="coerce").to_numpy(float)
    bad = np.flatnonzero(~np.isfinite(values))
    if len(bad):
        raise DatasetError(f"{source}: column {col}, row {int(bad[0])}: {df[col].iloc[bad[0]]!r} is not a number")
    return values


def read_bandit(path: Path) -> pd.DataFrame:
    return read_parquet_columns(path, REQUIRED)


def bandit_data(df: pd.DataFrame, source: str = "dataset") -> tuple[BanditData, dict[str, np.ndarray]]:
    """Validate a generic bandit frame; return BanditData and flat per-candidate extras."""
    n = len(df)
    if n == 0:
        raise DatasetError(f"{source}: no rows to evaluate")
    prop = _numeric(df, "propensity", source)
    bad = np.flatnonzero(~((prop > 0) & (prop <= 1)))
    if len(bad):
        raise DatasetError(f"{source}: column propensity, row {int(bad[0])}: {float(prop[bad[0]])} is not in (0, 1]")
    reward = _numeric(df, "reward", source)
    actions = df["action"].to_numpy()
    extras: dict[str, np.ndarray] = {}
    if "actions" in df.columns:
        lists = [list(a) if a is not None else [] for a in df["actions"]]
        logged_pos = []
        for i, (a, cands) in enumerate(zip(actions, lists)):
            if len(set(cands)) != len(cands):
                dup = next(c for c in cands if cands.count(c) > 1)
                raise DatasetError(f"{source}: column actions, row {i}: action {dup!r} is listed "
                                   f"{cands.count(dup)} times (each candidate once)")
            try:
                logged_pos.append(cands.index(a))
            except ValueError:
                raise DatasetError(f"{source}: column actions, row {i}: does not contain the logged "
                                   f"action {a!r}") from None
        sizes = np.array([len(c) for c in lists], dtype=np.int64)
        flat = np.array([x for c in lists for x in c], dtype=object)
        for col in ("target_probs", "reward_hat"):
            if col in df.columns:
                vals = [np.asarray(v if v is not None else [], dtype=float) for v in df[col]]
                for i, (v, k) in enumerate(zip(vals, sizes)):
                    if len(v) != k:
                        raise DatasetError(f"{source}: column {col}, row {i}: {len(v)} values for {k} actions")
                    if not np.isfinite(v).all():
                        raise DatasetError(f"{source}: column {col}, row {i}: not finite")
                    if col == "target_probs" and (abs(v.sum() - 1.0) > 1e-6 or (v < 0).any()):
                        raise DatasetError(f"{source}: column target_probs, row {i}: not a probability "
                                           f"vector (sums to {v.sum():.6f})")
                extras[col] = np.concatenate(vals) if vals else np.zeros(0)
    else:
        sizes = np.ones(n, dtype=np.int64)
        flat = actions.astype(object)
        logged_pos = [0] * n
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    if "target_prob" in df.columns and "target_probs" not in extras:
        tp = _numeric(df, "target_prob", source)
        bad = np.flatnonzero((tp < 0) | (tp > 1))
        if len(bad):
            raise DatasetError(f"{source}: column target_prob, row {int(bad[0])}: {float(tp[bad[0]])} not in [0, 1]")
        t = np.zeros(offsets[-1])
        t[offsets[:-1] + np.asarray(logged_pos)] = tp
        extras["target_prob_logged"] = t
    _check_slates(df, source)
    groups = df.drop(columns=[c for c in ("actions", "target_probs", "reward_hat", "features") if c in df.columns])
    data = BanditData(
        reward=reward, propensity=prop, offsets=offsets,
        logged=offsets[:-1] + np.asarray(logged_pos, dtype=np.int64), candidates=flat,
        uniform=(df["policy"].astype(str) == "uniform").to_numpy() if "policy" in df.columns else np.zeros(n, bool),
        groups=groups.reset_index(drop=True),
    )
    return data, extras


def _check_slates(df: pd.DataFrame, source: str) -> None:
    """position is an integer slot; within a slate_id, a slot holds one item."""
    if "slate_id" in df.columns and df["slate_id"].isna().any():
        raise DatasetError(f"{source}: column slate_id, row {int(np.flatnonzero(df['slate_id'].isna())[0])}: missing")
    if "position" not in df.columns:
        return
    pos = _numeric(df, "position", source)
    bad = np.flatnonzero((pos < 0) | (pos != np.floor(pos)))
    if len(bad):
        row = int(bad[0])
        raise DatasetError(f"{source}: column position, row {row}: {float(pos[row])!r} is not an integer >= 0")
    if "slate_id" not in df.columns:
        return
    dup = pd.DataFrame({"s": df["slate_id"].astype(str).to_numpy(), "p": pos}).duplicated(keep="first").to_numpy()
    if dup.any():
        row = int(np.flatnonzero(dup)[0])
        raise DatasetError(f"{source}: columns slate_id/position, row {row}: slate {df['slate_id'].iloc[row]!r} "
                           f"already has an item at position {int(pos[row])}")


def _reward_model(df: pd.DataFrame, data: BanditData, seed: int, folds: np.ndarray) -> np.ndarray | None:
    """Flat DR reward-model predictions, cross-fitted: each row's from a LightGBM model on
    (features, action) fitted on the other folds, never on the row itself."""
    if "features" not in df.columns:
        return None
    import lightgbm as lgb

    ctx = np.stack([np.asarray(v, dtype=np.float32) for v in df["features"]])
    codes = {a: k for k, a in enumerate(pd.unique(data.candidates))}
    cand_code = np.array([codes[a] for a in data.candidates], dtype=np.float32)
    x_logged = np.column_stack([ctx, cand_code[data.logged]])
    x_flat = np.column_stack([ctx[data.segment], cand_code])
    params = {"objective": "binary" if set(np.unique(data.reward)) <= {0.0, 1.0} else "regression",
              "num_leaves": 15, "learning_rate": 0.08, "min_data_in_leaf": 20, "verbosity": -1,
              "num_threads": 1, "seed": seed}
    out = np.zeros(len(data.candidates))
    for j in np.unique(folds):
        train = folds != j
        ds = lgb.Dataset(x_logged[train], data.reward[train], categorical_feature=[ctx.shape[1]])
        booster = lgb.train(params, ds, num_boost_round=150)
        flat = folds[data.segment] == j
        out[flat] = np.asarray(booster.predict(x_flat[flat]), dtype=np.float64)
    return out


def best_action_probs(data: BanditData, rows: np.ndarray | None = None,
                      weights: np.ndarray | None = None) -> np.ndarray:
    """Greedy on each action's self-normalized IPS take rate over `rows` (default all rows),
    each row counted `weights[row]` times (a bootstrap resample; default once)."""
    sel = np.arange(data.n) if rows is None else np.asarray(rows, dtype=np.int64)
    logged = data.candidates[data.logged[sel]]
    c = np.ones(len(sel)) if weights is None else np.asarray(weights, dtype=np.float64)[sel]
    df = pd.DataFrame({"a": logged, "wr": c * data.reward[sel] / data.propensity[sel],
                       "w": c / data.propensity[sel]})
    agg = df.groupby("a")[["wr", "w"]].sum()
    rate = (agg["wr"] / agg["w"]).to_dict()
    scores = np.array([rate.get(a, -np.inf) for a in data.candidates])
    return argmax_probs(scores, data)


def crossfit_best_action_probs(data: BanditData, folds: np.ndarray,
                               weights: np.ndarray | None = None) -> np.ndarray:
    """best_action chosen on the other folds for each row: never scored on the rows it was chosen on."""
    out = np.zeros(len(data.candidates))
    for j in np.unique(folds):
        flat = folds[data.segment] == j
        out[flat] = best_action_probs(data, np.flatnonzero(folds != j), weights)[flat]
    return out


def slate_estimates(data: BanditData, policies: list[PolicyView], cfg: EvalConfig) -> dict[str, Any]:
    """Independent IPS (Li et al. 2018) of each policy's slate value: the sum over a slate's
    positions of the position-wise importance-weighted rewards, averaged over slates, with the
    same (paired) bootstrap resamples as every other estimate."""
    slate = pd.factorize(data.groups["slate_id"].astype(str))[0]
    size = np.bincount(slate)[slate].astype(np.float64)
    counts = bootstrap_counts(data.n, cfg.bootstrap, cfg.seed, bootstrap_clusters(data)) if cfg.bootstrap else None
    n_slates = int(slate.max()) + 1 if data.n else 0
    out: dict[str, Any] = {}
    for pol in policies:
        w = pol.probs[data.logged] / data.propensity
        if cfg.clip is not None:
            w = np.minimum(w, cfg.clip)
        wr = w * data.reward
        value = float(wr.sum() / n_slates) if n_slates else float("nan")
        lo = hi = float("nan")
        if counts is not None:
            boot = (counts @ wr) / np.maximum(counts @ (1.0 / size), 1e-12)
            lo, hi = percentile_interval(boot, cfg.confidence)
        out[pol.name] = {"iips": {"value": value, "lo": lo, "hi": hi, "slates": n_slates,
                                  "max_weight": float(w.max()) if len(w) else float("nan")}}
    return out


def _flat_rows(data: BanditData, rows: np.ndarray) -> np.ndarray:
    """Flat candidate indices of `rows`, in the layout of `data.subset(rows)`."""
    return np.concatenate([np.arange(data.offsets[r], data.offsets[r + 1]) for r in rows]) if len(rows) else (
        np.zeros(0, np.int64))


def fit_split(df: pd.DataFrame, fit_share: float, source: str) -> tuple[np.ndarray, np.ndarray, str]:
    """(fit rows, scored rows, rule): the oldest `fit_share` of rows, by the `timestamp`
    column when the file has one, else in file order."""
    if not 0.0 < fit_share < 1.0:
        raise DatasetError(f"--fit-share: {fit_share} is not in (0, 1)")
    if "timestamp" in df.columns:
        try:
            t = pd.to_datetime(df["timestamp"], utc=True)
        except (ValueError, TypeError) as exc:
            raise DatasetError(f"{source}: column timestamp: not a timestamp ({exc})") from exc
        order, by = np.argsort(t.to_numpy(), kind="stable"), "timestamp"
    else:
        order, by = np.arange(len(df)), "file order"
    cut = int(round(len(df) * fit_share))
    if cut == 0 or cut == len(df):
        raise DatasetError(f"{source}: --fit-share {fit_share} of {len(df)} rows leaves nothing to fit or to score")
    return (np.sort(order[:cut]), np.sort(order[cut:]),
            f"oldest {fit_share:.0%} of rows by {by} fit best_action and DR's reward model; the rest are scored")


def evaluate_bandit(df: pd.DataFrame, cfg: EvalConfig | None = None, by: tuple[str, ...] = (),
                    source: str = "dataset", fit_share: float | None = None) -> dict[str, Any]:
    """Estimates of the file's policies. Baselines learned from the log (best_action, DR's
    reward model) are cross-fitted in `cfg.crossfit_folds` folds, or, with `fit_share`, fitted
    on the oldest share of rows and everything is scored on the rest."""
    cfg = cfg or EvalConfig()
    unknown = [c for c in by if c not in df.columns or c in ("actions", "target_probs", "reward_hat", "features")]
    if unknown:
        usable = sorted(c for c in df.columns if c not in ("actions", "target_probs", "reward_hat", "features"))
        raise DatasetError(f"{source}: --by column(s) {', '.join(unknown)} not in the file; its columns: "
                           f"{', '.join(usable)}")
    if "position" in df.columns and "position" not in by:
        by = (*by, "position")
    data, extras = bandit_data(df, source)
    has_sets = "actions" in df.columns
    rhat = extras.get("reward_hat")
    if fit_share is None:
        folds = member_folds(data, cfg.crossfit_folds, cfg.seed)
        fitting = f"cross-fitted in {cfg.crossfit_folds} folds"
        scored = np.arange(data.n)
    else:
        fit_rows, scored, fitting = fit_split(df, fit_share, source)
        folds = np.zeros(data.n, dtype=np.int64)
        folds[scored] = 1  # the scored rows' baselines come from fold 0 only
    if rhat is None and has_sets:
        rhat = _reward_model(df, data, cfg.seed, folds)
    policies: list[PolicyView] = []
    if "target_probs" in extras:
        policies.append(PolicyView("target", extras["target_probs"], rhat, {"kind": "given target_probs"}))
    elif "target_prob_logged" in extras:
        policies.append(PolicyView("target", extras["target_prob_logged"], None, {"kind": "given target_prob"}))
    if has_sets:
        policies.append(PolicyView("random", uniform_probs(data), rhat, {"kind": "uniform over actions"}))
        policies.append(PolicyView("best_action", crossfit_best_action_probs(data, folds), rhat,
                                   {"kind": f"best single action (SNIPS), {fitting}, and chosen again "
                                            f"in every bootstrap resample"},
                                   rechoose=functools.partial(crossfit_best_action_probs, data, folds)))
    if not policies:
        raise DatasetError(f"{source}: nothing to evaluate: give target_probs/target_prob or actions")
    if fit_share is not None:  # score the newer rows only, with what the older ones fitted
        flat = _flat_rows(data, scored)
        held = data.subset(scored)
        policies = [PolicyView(p.name, p.probs[flat], None if p.rhat is None else p.rhat[flat], p.info,
                               None if p.rechoose is None else _rechoose_on(p.rechoose, scored, flat, data.n))
                    for p in policies]
        data = held
    from dataclasses import replace

    result = estimate_policies(data, policies, replace(cfg, breakdowns=tuple(by)))
    if "slate_id" in df.columns:
        result["slates"] = slate_estimates(data, policies, cfg)
    result["source"] = source
    result["baselines"] = fitting
    result["reward_model"] = "given reward_hat" if "reward_hat" in extras else (
        f"lightgbm on (features, action), {fitting}" if rhat is not None else "none (no DR)")
    return result


def _rechoose_on(rechoose, scored: np.ndarray, flat: np.ndarray, n: int):
    """`rechoose` for the scored rows: resample weights apply to them, the fit rows keep weight 1."""
    def again(w_scored: np.ndarray) -> np.ndarray:
        w = np.ones(n)
        w[scored] = w_scored
        return rechoose(w)[flat]
    return again
