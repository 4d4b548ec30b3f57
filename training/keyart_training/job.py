"""The training job: logged data -> model artifact -> (optionally) promotion."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from keyart.core.model import promote, save_model
from keyart_training.dataset import LabelledData
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


def run_training(
    data: LabelledData,
    models_dir: Path,
    config: TrainConfig | None = None,
    ips_weights: bool = False,
    promote_after: bool = True,
    source: str = "",
) -> JobResult:
    """Train on labelled data, save the artifact under models_dir, promote if asked."""
    weights = None
    if ips_weights:
        # Inverse propensity weights undo the logging policy's preference for its
        # own favourites; normalised to mean 1 so learning rates keep their meaning.
        w = 1.0 / data.frame["propensity"].to_numpy(float)
        weights = w / w.mean()
    decided = data.frame["decided_at"].to_numpy()
    result = train_quality_model(data.x, data.y, decided, weights=weights, config=config)
    version = new_version(data)
    path = save_model(
        models_dir,
        version,
        result.booster,
        result.ensemble,
        extra_meta={
            "trained_at": datetime.now(timezone.utc).isoformat(),
            "source": source,
            "rows": int(len(data.y)),
            "ips_weights": ips_weights,
            "metrics": result.metrics,
            "label_positive_rate": float(np.mean(data.y)) if len(data.y) else 0.0,
        },
    )
    if promote_after:
        promote(models_dir, version)
    return JobResult(version=version, path=path, metrics=result.metrics, promoted=promote_after)
