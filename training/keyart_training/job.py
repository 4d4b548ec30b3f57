"""The training job: logged data -> model artifact -> (optionally) promotion."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from keyart.core.model import promote, save_model
from keyart_training.data.dataset import LabelledData
from keyart_training.data.window import TrainingWindow
from keyart_training.distributed import RayConfig
from keyart_training.train import TrainConfig, train_quality_model


@dataclass
class JobResult:
    version: str
    path: Path
    metrics: dict[str, float]
    promoted: bool


def new_version(data: LabelledData, now: datetime | None = None) -> str:
    """Sortable, content-derived version: m-<utc time>-<hash of the training rows>."""
    now = now or datetime.now(timezone.utc)
    digest = hashlib.sha256(data.x.tobytes() + data.y.tobytes()).hexdigest()[:8]
    return f"m-{now:%Y%m%d%H%M%S}-{digest}"


def ips_weights_of(data: LabelledData, clip: float | None = None) -> np.ndarray:
    """Inverse propensity weights, optionally capped at `clip`, normalised to mean 1.

    They undo the logging policy's preference for its own favourites; mean 1 keeps
    learning rates and min_data_in_leaf meaningful.
    """
    w = 1.0 / data.frame["propensity"].to_numpy(float)
    if clip is not None:
        w = np.minimum(w, clip)
    return w / w.mean() if len(w) else w


def run_training(
    data: LabelledData,
    models_dir: Path,
    config: TrainConfig | None = None,
    ips_weights: bool = False,
    promote_after: bool = True,
    source: str = "",
    ips_clip: float | None = None,
    ray: RayConfig | None = None,
    holdout_from: datetime | None = None,
    holdout_share: float | None = None,
    holdout_rows: int | None = None,
    catalog_lineages: Mapping[str, str] | None = None,
) -> JobResult:
    """Train on labelled data, save the artifact under models_dir, promote if asked.

    meta.json records the decision-time window of `data` (`training_window`: first and
    last `decided_at`, rows, source, and where the caller's hold-out starts, if any);
    offline evaluation scores the model only on decisions after it.
    With `ray`, the same job runs distributed (`distributed.train_quality_model_ray`).
    `catalog_lineages` (image -> lineage of the catalog's images) gives a version the log
    never showed its logged siblings' offsets (`train_quality_model`).
    """
    weights = ips_weights_of(data, ips_clip) if ips_weights else None
    decided = data.frame["decided_at"].to_numpy()
    if ray is not None:
        from keyart_training.distributed import train_quality_model_ray

        result = train_quality_model_ray(data.x, data.y, decided, weights=weights, config=config, ray_config=ray,
                                         space=data.space)
    else:
        result = train_quality_model(data.x, data.y, decided, weights=weights, config=config,
                                     started=data.started, image_ids=data.frame["image_id"].to_numpy(),
                                     space=data.space, title_ids=data.frame["title_id"].to_numpy(),
                                     lineage_ids=(data.frame["lineage_id"].to_numpy()
                                                  if "lineage_id" in data.frame.columns else None),
                                     catalog_lineages=catalog_lineages)
    version = new_version(data)
    window = TrainingWindow.of_frame(
        data.frame, source=source, holdout_share=holdout_share, holdout_rows=holdout_rows,
        holdout_from=None if holdout_from is None else pd.Timestamp(holdout_from))
    if result.space is None:
        raise ValueError("a trained model needs its feature space to be saved")
    path = save_model(
        models_dir,
        version,
        result.booster,
        result.space,
        result.ensemble,
        stay=result.stay,
        ensemble_stay=result.ensemble_stay,
        image_offsets=result.image_offsets,
        ensemble_offsets=result.ensemble_offsets,
        stay_offsets=result.stay_offsets,
        extra_meta={
            "trained_at": datetime.now(timezone.utc).isoformat(),
            "source": source,
            "rows": int(len(data.y)),
            "ips_weights": ips_weights,
            "ips_clip": ips_clip,
            "distributed": ray is not None,
            "metrics": result.metrics,
            "label_positive_rate": float(np.mean(data.y)) if len(data.y) else 0.0,
            # The decision-time window trained on: evaluation scores the model only on later decisions.
            "training_window": None if window is None else window.as_meta(),
            # Legacy names of the same first and last decision time (older readers).
            "data_from": None if window is None else window.decided_from.isoformat(),
            "data_until": None if window is None else window.decided_until.isoformat(),
        },
    )
    if promote_after:
        promote(models_dir, version)
    return JobResult(version=version, path=path, metrics=result.metrics, promoted=promote_after)
