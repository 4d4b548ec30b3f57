"""The same training job on Ray, for data that outgrows one machine.

`train_quality_model_ray` gives what `train.train_quality_model` gives (booster,
bootstrap ensemble, metrics) with the same time-based validation split, early
stopping, categorical features and optional weights, but:

* the main booster is trained data-parallel with Ray Train's `LightGBMTrainer`
  (LightGBM's own socket-based distributed learner, `tree_learner=data`): the
  training rows are split over `num_workers` workers through Ray Data; every
  worker holds the whole validation set, so all workers compute the same
  validation loss and early-stop at the same round; then, in the same worker
  group, the booster is refit on all rows with the chosen number of rounds;
* the bootstrap ensemble members (Thompson sampling) are independent fits, so
  they run as parallel Ray tasks over one copy of the data in the object store.

Checked with ray 2.60.0 and lightgbm 4.7.0 on a local instance (no internet
needed). `ray.init` is called only when Ray is not initialised yet (then it is
shut down afterwards); pass `address` to use a running cluster.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd

from keyart.core.feature_space import FeatureSpace
from keyart_training.train import TrainConfig, TrainResult, _params, auc, log_loss, time_split

LABEL = "__label"
WEIGHT = "__weight"
MODEL_FILE = "model.txt"


@dataclass(frozen=True)
class RayConfig:
    """Where and how wide the distributed job runs."""

    num_workers: int = 2
    cpus_per_worker: int = 1
    address: str | None = None  # None: a running instance, or a local one started for the job
    local_cpus: int = 2  # size of the local instance started when none is running
    storage_path: str | None = None  # Ray Train run storage (checkpoints); default a temp dir


def _frame(names: list[str], x: np.ndarray, y: np.ndarray, w: np.ndarray | None) -> pd.DataFrame:
    df = pd.DataFrame(x, columns=names)
    df[LABEL] = y
    df[WEIGHT] = 1.0 if w is None else w
    return df


BIND_ATTEMPTS = 3


def _shifted(network: dict, offset: int) -> dict:
    """LightGBM network parameters with every port moved by `offset`."""
    machines = ",".join(
        f"{host}:{int(port) + offset}" for host, port in (m.rsplit(":", 1) for m in network["machines"].split(","))
    )
    return {**network, "machines": machines, "local_listen_port": int(network["local_listen_port"]) + offset}


def _train_loop(config: dict) -> None:  # runs on every Ray Train worker
    import ray.train
    from ray.train import Checkpoint
    from ray.train.lightgbm import get_network_params

    ctx = ray.train.get_context()
    names, categorical = list(config["feature_names"]), list(config["categorical"])

    def load(name: str) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
        df = ray.train.get_dataset_shard(name).materialize().to_pandas()
        return df[names], df[LABEL].to_numpy(), df[WEIGHT].to_numpy()

    def dataset(parts, reference=None) -> lgb.Dataset:
        xs, ys, ws = parts
        return lgb.Dataset(xs, label=ys, weight=ws if config["weighted"] else None,
                           feature_name=names, categorical_feature=categorical,
                           reference=reference, free_raw_data=False)

    params = dict(config["params"])
    params.update(tree_learner="data", pre_partition=True, num_threads=config["threads"])
    train_parts, valid_parts, full_parts = load("train"), load("valid"), load("full")
    dtrain = dataset(train_parts)
    dvalid = dataset(valid_parts, reference=dtrain)
    booster = lgb.train({**params, **get_network_params()}, dtrain, num_boost_round=config["max_rounds"],
                        valid_sets=[dvalid], valid_names=["valid"],
                        callbacks=[lgb.early_stopping(config["early_stopping_rounds"], verbose=False)])
    rounds = max(1, booster.best_iteration or config["max_rounds"])
    p_valid = np.asarray(booster.predict(valid_parts[0], num_iteration=rounds), dtype=np.float64)
    booster.free_network()
    # Refit on all rows with the chosen rounds, in the same worker group. LightGBM
    # cannot re-bind the listening port it just freed, so every worker moves to the
    # next port (the same rule on every worker keeps the machine list consistent).
    final = lgb.train({**params, **_shifted(get_network_params(), 1)}, dataset(full_parts),
                      num_boost_round=rounds)
    final.free_network()
    metrics = {"rounds": float(rounds), "valid_auc": auc(valid_parts[1], p_valid),
               "valid_logloss": log_loss(valid_parts[1], p_valid)}
    if ctx.get_world_rank() == 0:
        with tempfile.TemporaryDirectory() as tmp:
            final.save_model(str(Path(tmp) / MODEL_FILE))
            ray.train.report(metrics, checkpoint=Checkpoint.from_directory(tmp))
    else:
        ray.train.report(metrics)


def _fit_member(x: np.ndarray, y: np.ndarray, w: np.ndarray | None, params: dict, rounds: int,
                seed: int, names: list[str], categorical: list[str]) -> str:
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(y), size=len(y))
    ds = lgb.Dataset(x[idx], label=y[idx], weight=None if w is None else w[idx],
                     feature_name=names, categorical_feature=categorical)
    return lgb.train({**params, "num_threads": 1}, ds, num_boost_round=rounds).model_to_string()


def train_quality_model_ray(
    x: np.ndarray,
    y: np.ndarray,
    decided_at: np.ndarray,
    weights: np.ndarray | None = None,
    config: TrainConfig | None = None,
    ray_config: RayConfig | None = None,
    *,
    space: FeatureSpace,
) -> TrainResult:
    """Distributed counterpart of `train.train_quality_model` (same arguments, same result)."""
    import ray
    from ray.train import DataConfig, RunConfig, ScalingConfig
    from ray.train.lightgbm import LightGBMTrainer

    cfg = config or TrainConfig()
    names, categorical = list(space.names), list(space.categorical)
    rc = ray_config or RayConfig()
    started = time.monotonic()
    tr, va = time_split(decided_at, cfg.validation_share)
    w = None if weights is None else np.asarray(weights, dtype=np.float64)
    own_instance = not ray.is_initialized()
    if own_instance:
        ray.init(address=rc.address, num_cpus=None if rc.address else rc.local_cpus,
                 include_dashboard=False, log_to_driver=False)
    storage = rc.storage_path or tempfile.mkdtemp(prefix="keyart-ray-train-")
    try:
        sub = lambda idx: None if w is None else w[idx]  # noqa: E731
        datasets: dict[str, Any] = {
            "train": ray.data.from_pandas(_frame(names, x[tr], y[tr], sub(tr))),
            "valid": ray.data.from_pandas(_frame(names, x[va], y[va], sub(va))),
            "full": ray.data.from_pandas(_frame(names, x, y, w)),
        }
        params = _params(cfg, cfg.seed)

        def trainer(attempt: int) -> LightGBMTrainer:
            return LightGBMTrainer(
                _train_loop,
                train_loop_config={"params": params, "weighted": w is not None, "max_rounds": cfg.max_rounds,
                                   "early_stopping_rounds": cfg.early_stopping_rounds,
                                   "threads": rc.cpus_per_worker, "feature_names": names,
                                   "categorical": categorical},
                scaling_config=ScalingConfig(num_workers=rc.num_workers,
                                             resources_per_worker={"CPU": rc.cpus_per_worker}),
                datasets=datasets,
                dataset_config=DataConfig(datasets_to_split=["train", "full"]),
                run_config=RunConfig(storage_path=storage, name=f"keyart-train-{int(time.time())}-{attempt}"),
            )

        # LightGBM's workers listen on ports picked when the worker group starts; another
        # process can take one in between ("Binding port ... failed"). A new worker group
        # picks new ports, so that one failure is retried.
        for attempt in range(BIND_ATTEMPTS):
            try:
                result = trainer(attempt).fit()
                break
            except Exception as exc:
                if "Binding port" not in str(exc) or attempt == BIND_ATTEMPTS - 1:
                    raise
        if result.checkpoint is None or result.metrics is None:
            raise RuntimeError(f"Ray Train run {storage} reported no model")
        with result.checkpoint.as_directory() as d:
            booster = lgb.Booster(model_file=str(Path(d) / MODEL_FILE))
        ray_metrics: dict[str, Any] = dict(result.metrics)
        rounds = int(ray_metrics["rounds"])
        fit = ray.remote(num_cpus=1)(_fit_member)
        x_ref, y_ref, w_ref = ray.put(x), ray.put(y), ray.put(w)
        futures = [fit.remote(x_ref, y_ref, w_ref, _params(cfg, cfg.seed + 1 + k), rounds, cfg.seed + 1000 + k,
                               names, categorical)
                   for k in range(cfg.ensemble_size)]
        ensemble = [lgb.Booster(model_str=s) for s in ray.get(futures)]
    finally:
        if own_instance:
            ray.shutdown()
    base_rate = float(np.mean(y[tr])) if len(tr) else 0.0
    metrics = {
        "rows_train": float(len(tr)),
        "rows_valid": float(len(va)),
        "rounds": float(rounds),
        "valid_auc": float(ray_metrics["valid_auc"]),
        "valid_logloss": float(ray_metrics["valid_logloss"]),
        "valid_logloss_base_rate": log_loss(y[va], np.full(len(va), base_rate)),
        "positive_rate": float(np.mean(y)),
        "ray_workers": float(rc.num_workers),
        "train_seconds": time.monotonic() - started,
    }
    return TrainResult(booster=booster, space=space, ensemble=ensemble, metrics=metrics)
