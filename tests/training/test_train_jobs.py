"""Training jobs: ensemble, IPS-weighted job artifacts, and the Ray path."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from keyart.core.model import load_model
from keyart_training.data.dataset import label
from keyart_training.job import run_training
from keyart_training.train import TrainConfig, train_quality_model

FAST = TrainConfig(num_leaves=7, max_rounds=40, early_stopping_rounds=10, min_data_in_leaf=20,
                   ensemble_size=3, num_threads=1)


@pytest.fixture(scope="module")
def labelled(uniform_log, world, index):
    return label(uniform_log, world.params.quality_minutes, index.space)


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
    model = load_model(result.path)  # two heads with image offsets: Thompson draws offsets
    assert len(model.ensemble_offsets) == 3 and model.ensemble == [] and model.has_ensemble


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
    p = model.predict(labelled.x[:100], list(labelled.frame["image_id"][:100]))
    assert ((p > 0) & (p < 1)).all()
    assert json.loads((result.path / "meta.json").read_text())["distributed"] is True


def test_two_heads_saved_loaded_and_multiplied(labelled, tmp_path):
    """start x stay: both heads and their forest ensembles round-trip through the artifact, and
    the prediction is the product of the heads."""
    assert labelled.started is not None and (labelled.started >= labelled.y).all()
    result = run_training(labelled, tmp_path, replace(FAST, thompson_posterior="forests"), promote_after=False,
                          source="test")
    meta = json.loads((result.path / "meta.json").read_text())
    assert meta["heads"] == "start_x_stay" and meta["metrics"]["heads"] == "start_x_stay"
    model = load_model(result.path)
    assert model.stay is not None and len(model.ensemble_stay) == len(model.ensemble) == 3
    x, ids = labelled.x[:50], list(labelled.frame["image_id"][:50])
    off = np.array([model.image_offsets.get(i, 0.0) for i in ids])
    assert meta["image_offsets"] == len(model.image_offsets) > 0 and np.ptp(off) > 0
    stay_off = np.array([model.stay_offsets.get(i, 0.0) for i in ids])
    assert meta["stay_offsets"] == len(model.stay_offsets) > 0 and np.ptp(stay_off) > 0
    start = _sigmoid(model.booster.predict(x, raw_score=True) + off)
    stay = _sigmoid(model.stay.predict(x, raw_score=True) + stay_off)
    assert np.allclose(model.predict(x, ids), start * stay)
    start1 = _sigmoid(model.ensemble[1].predict(x, raw_score=True) + off)
    stay1 = _sigmoid(model.ensemble_stay[1].predict(x, raw_score=True) + stay_off)
    assert np.allclose(model.predict_ensemble(x, ids)[1], start1 * stay1)
    with pytest.raises(ValueError, match="adds per-image offsets: pass the 50 rows' image ids"):
        model.predict(x)  # never silently without its offsets
    m = meta["metrics"]
    assert 0.0 <= m["valid_ece"] < 0.05 and len(m["valid_calibration"]) == 10
    assert sum(b["rows"] for b in m["valid_calibration"]) == m["rows_valid"]
    assert isinstance(m["beats_non_contextual"], bool)
    from keyart.errors import ModelLoadError
    (result.path / "image_offsets.json").write_text("[1, 2")
    with pytest.raises(ModelLoadError, match="image_offsets.json: SHA-256 differs"):  # caught before parsing
        load_model(result.path)
    _drop_checksums(result.path)  # as an artifact of an older Keyart: the parse itself refuses it
    with pytest.raises(ModelLoadError, match="cannot load the image offsets"):
        load_model(result.path)
    (result.path / "image_offsets.json").write_text("{}")
    (result.path / "stay_offsets.json").write_text('{"an-image": "not a number"}')
    with pytest.raises(ModelLoadError, match="stay_offsets.json: cannot load the stay offsets"):
        load_model(result.path)
    (result.path / "stay.txt").unlink()  # a two-head artifact without its stay head is refused
    with pytest.raises(ModelLoadError, match="cannot load booster"):
        load_model(result.path)


def test_guard_says_when_a_per_image_rate_beats_the_model():
    """Images whose take rates differ for no reason the features show: the model cannot beat
    the per-image rate, and its metrics say so; when the context decides the rate, it does."""
    rng = np.random.default_rng(4)
    n, images = 30_000, 20
    image = rng.integers(0, images, n)
    rate = np.linspace(0.02, 0.6, images)[image]
    y = (rng.random(n) < rate).astype(float)
    decided = np.arange(n)
    ids = np.array([f"i{k}" for k in image])
    blind = rng.random((n, 40)).astype(np.float32)
    cfg = TrainConfig(num_leaves=7, max_rounds=60, early_stopping_rounds=10, ensemble_size=0, num_threads=1,
                      search=())
    res = train_quality_model(blind, y, decided, config=cfg, image_ids=ids)
    assert res.metrics["beats_non_contextual"] is False
    # A take rate the context decides (the same for every image): now the model wins.
    y_ctx = (rng.random(n) < 1.0 / (1.0 + np.exp(-6.0 * (blind[:, 0] - 0.5)))).astype(float)
    res = train_quality_model(blind, y_ctx, decided, config=cfg, image_ids=ids)
    assert res.metrics["beats_non_contextual"] is True


def test_stay_offsets_see_images_whose_plays_do_not_last():
    """Clickbait is a trait of the image: every image starts plays at the same rate, but half
    of them lose most of those plays before they count. No feature shows it; the stay head's
    per-image offsets do, and the model ranks the images by their quality rate."""
    rng = np.random.default_rng(8)
    n, images = 40_000, 20
    image = rng.integers(0, images, n)
    stay_logit = np.where(np.arange(images) % 2 == 0, 1.0, -1.5)  # odd images: bait
    started = rng.random(n) < 0.3
    y = (started & (rng.random(n) < 1.0 / (1.0 + np.exp(-stay_logit[image])))).astype(float)
    ids = np.array([f"i{k:02d}" for k in image])
    blind = rng.random((n, 10)).astype(np.float32)
    cfg = TrainConfig(num_leaves=7, max_rounds=60, early_stopping_rounds=10, ensemble_size=0, num_threads=1,
                      search=())
    res = train_quality_model(blind, y, np.arange(n), config=cfg, started=started.astype(float), image_ids=ids)
    assert res.metrics["stay_offsets"] == images and np.isfinite(res.metrics["stay_prior_rows"])
    learned = np.array([res.stay_offsets[f"i{k:02d}"] for k in range(images)])
    assert np.corrcoef(learned, stay_logit)[0, 1] > 0.9
    p = res.predict(blind[:images], np.array([f"i{k:02d}" for k in range(images)]))
    assert p[::2].min() > p[1::2].max()  # every lasting image above every bait image
    without = train_quality_model(blind, y, np.arange(n), config=replace(cfg, stay_prior_rows=()),
                                  started=started.astype(float), image_ids=ids)
    assert without.stay_offsets == {} and without.metrics["valid_logloss"] > res.metrics["valid_logloss"]


def test_thompson_offset_draws(labelled, tmp_path):
    """The default posterior: bootstrap draws of the per-image offsets over the main heads.
    Member k scores sigmoid(start logit + offsets_k) x stay; the draws differ (the images'
    appeal is uncertain), round-trip through the artifact, and a bad file is refused."""
    result = run_training(labelled, tmp_path, FAST, promote_after=False, source="test")
    meta = json.loads((result.path / "meta.json").read_text())
    assert meta["metrics"]["thompson_posterior"] == "offsets" and meta["ensemble_offsets"] == 3
    assert meta["ensemble_size"] == 0  # no forest members to score per page
    model = load_model(result.path)
    x, ids = labelled.x[:50], list(labelled.frame["image_id"][:50])
    members = model.predict_ensemble(x, ids)
    assert members.shape == (3, 50) and np.ptp(members, axis=0).max() > 1e-3
    raw = model.booster.predict(x, raw_score=True)
    stay = _sigmoid(model.stay.predict(x, raw_score=True) + np.array([model.stay_offsets.get(i, 0.0) for i in ids]))
    for k, table in enumerate(model.ensemble_offsets):
        off = np.array([table.get(i, 0.0) for i in ids])
        assert np.allclose(members[k], stay * _sigmoid(raw + off))
    # The draws scatter around the point offsets (an image a resample missed has the prior, 0).
    mean = {i: np.mean([t.get(i, 0.0) for t in model.ensemble_offsets]) for i in model.image_offsets}
    assert np.corrcoef(list(mean.values()), [model.image_offsets[i] for i in mean])[0, 1] > 0.9
    with pytest.raises(ValueError, match="pass the 50 rows' image ids"):
        model.predict_ensemble(x)
    # The serving path gathers the same offsets by row from tables made once per catalog
    # (an image the model never saw gets 0 there too).
    ids = ids[:-1] + ["never-logged"]
    catalog_ids = sorted(set(ids) | {"another-unseen"}, reverse=True)
    table = model.row_offsets(catalog_ids)
    rows = np.array([catalog_ids.index(i) for i in ids])
    assert np.array_equal(model.predict(x, ids), model.predict(x, rows=rows, table=table))
    assert np.array_equal(model.predict_ensemble(x, ids), model.predict_ensemble(x, rows=rows, table=table))
    from keyart.errors import ModelLoadError
    (result.path / "ensemble_offsets.json").write_text("{")
    with pytest.raises(ModelLoadError, match="ensemble_offsets.json: SHA-256 differs"):
        load_model(result.path)
    _drop_checksums(result.path)
    with pytest.raises(ModelLoadError, match="cannot load Thompson's offset draws"):
        load_model(result.path)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def _drop_checksums(path) -> None:
    import json

    meta = json.loads((path / "meta.json").read_text())
    del meta["checksums"]
    (path / "meta.json").write_text(json.dumps(meta))
