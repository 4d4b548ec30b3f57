"""Training jobs: ensemble, IPS-weighted job artifacts, and the Ray path."""

from __future__ import annotations

import json

import numpy as np
import pytest

from keyart.core.model import load_model
from keyart_training.data.dataset import label
from keyart_training.job import run_training
from keyart_training.train import TrainConfig, train_quality_model

FAST = TrainConfig(num_leaves=7, max_rounds=40, early_stopping_rounds=10, min_data_in_leaf=20,
                   ensemble_size=3, num_threads=1)


@pytest.fixture(scope="module")
def labelled(uniform_log, world):
    return label(uniform_log, world.params.quality_minutes)


def test_ensemble_members_differ(labelled):
    res = train_quality_model(labelled.x, labelled.y, labelled.frame["decided_at"].to_numpy(), config=FAST)
    assert len(res.ensemble) == 3
    preds = np.stack([b.predict(labelled.x[:200]) for b in res.ensemble])
    assert ((preds >= 0) & (preds <= 1)).all()
    assert np.ptp(preds, axis=0).max() > 1e-3  # bootstrap resamples give different members
    assert res.metrics["rows_valid"] == pytest.approx(0.2 * len(labelled.y), abs=1)


def test_job_with_ips_weights_writes_artifact(labelled, tmp_path):
    result = run_training(labelled, tmp_path, FAST, ips_weights=True, ips_clip=50.0, promote_after=False,
                          source="test")
    meta = json.loads((result.path / "meta.json").read_text())
    assert meta["ips_weights"] is True and meta["ips_clip"] == 50.0 and meta["distributed"] is False
    assert meta["data_until"] >= meta["data_from"]
    assert not (tmp_path / "CURRENT").exists()
    assert len(load_model(result.path).ensemble) == 3


def test_ray_distributed_training(labelled, tmp_path):
    """The --ray path on one small local Ray instance (Ray Train LightGBMTrainer, 2 workers,
    plus Ray tasks for the ensemble)."""
    ray = pytest.importorskip("ray")
    from keyart_training.distributed import RayConfig

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        cfg = TrainConfig(num_leaves=7, max_rounds=30, early_stopping_rounds=5, min_data_in_leaf=20,
                          ensemble_size=2, num_threads=1)
        result = run_training(labelled, tmp_path, cfg, ips_weights=True, promote_after=False,
                              ray=RayConfig(num_workers=2, storage_path=str(tmp_path / "ray")))
    finally:
        ray.shutdown()
    model = load_model(result.path)
    assert len(model.ensemble) == 2
    assert result.metrics["ray_workers"] == 2.0 and result.metrics["rounds"] >= 1
    assert 0.4 < result.metrics["valid_auc"] <= 1.0
    p = model.predict(labelled.x[:100])
    assert ((p > 0) & (p < 1)).all()
    assert json.loads((result.path / "meta.json").read_text())["distributed"] is True
