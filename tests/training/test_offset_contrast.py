"""The weight of the image offsets' within-title differences, fitted on validation rows.

Choosing among a title's images looks only at how its images differ. The offsets'
shrinkage is chosen by log-loss over everything, mostly between titles; the validation
rows then say how much of each image's difference from its title's other images to keep.
"""

from __future__ import annotations

import numpy as np
import pytest

from keyart_training.train import (
    TrainConfig,
    fit_contrast_weight,
    train_quality_model,
    weigh_contrast,
    within_title_deviation,
)


@pytest.mark.parametrize("true_weight", [0.3, 1.0, 1.4])
def test_fit_contrast_weight_recovers_the_weight(true_weight: float) -> None:
    rng = np.random.default_rng(3)
    n = 40_000
    logit = rng.normal(-1.0, 0.5, n)
    deviation = rng.normal(0.0, 0.4, n)
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-(logit + (true_weight - 1.0) * deviation)))).astype(float)
    weight, se = fit_contrast_weight(y, logit, deviation)
    assert 0.01 < se < 0.05
    assert abs(weight - true_weight) < 3.5 * se


def test_little_evidence_leaves_the_weight_near_one() -> None:
    """Ten rows cannot move the weight far from its prior mean, 1."""
    rng = np.random.default_rng(4)
    logit, deviation = rng.normal(-1.0, 0.5, 10), rng.normal(0.0, 0.4, 10)
    y = np.zeros(10)
    y[deviation < 0] = 1.0  # the rows even point against the offsets
    weight, se = fit_contrast_weight(y, logit, deviation)
    assert 0.3 < weight < 1.0 and se > 0.4
    unrestrained, _ = fit_contrast_weight(y, logit, deviation, prior_sd=1e6)
    assert unrestrained < -5.0  # without the prior ten rows would flip the offsets


def test_weigh_contrast_keeps_each_titles_level() -> None:
    offsets = {"a1": 0.4, "a2": -0.2, "b1": 1.0, "lonely": 0.7}
    title_of = {"a1": "a", "a2": "a", "b1": "b"}
    weighed = weigh_contrast(offsets, title_of, 0.5)
    assert weighed == pytest.approx({"a1": 0.25, "a2": -0.05, "b1": 1.0, "lonely": 0.7})
    dev = within_title_deviation(offsets, title_of, np.array(["a1", "a2", "b1", "unknown"]))
    assert dev == pytest.approx([0.3, -0.3, 0.0, 0.0])


def _world(image_effect: float, seed: int) -> dict:
    """Titles with a strong level each; their images differ by `image_effect` (logit sd),
    which no feature shows: only the image offsets can see it."""
    rng = np.random.default_rng(seed)
    titles, per_title, n = 60, 4, 60_000
    level = rng.normal(-1.0, 1.0, titles)
    image_logit = level.repeat(per_title) + rng.normal(0.0, image_effect, titles * per_title)
    image = rng.integers(0, titles * per_title, n)
    started = (rng.random(n) < 1.0 / (1.0 + np.exp(-image_logit[image]))).astype(float)
    y = started * (rng.random(n) < 0.5)
    return {"x": rng.random((n, 5)).astype(np.float32), "y": y, "started": started,
            "image_ids": np.array([f"i{k:03d}" for k in image]),
            "title_ids": np.array([f"t{k // per_title:02d}" for k in image]),
            "truth": {f"i{k:03d}": image_logit[k] - image_logit[k - k % per_title:][:per_title].mean()
                      for k in range(titles * per_title)}}


# A small prior leaves the offsets' within-title differences mostly noise when images do not differ.
_CFG = TrainConfig(num_leaves=7, max_rounds=40, early_stopping_rounds=10, ensemble_size=0, num_threads=1,
                   search=(), image_prior_rows=(2.0,), stay_prior_rows=(2.0,))


def _fit(world: dict, cfg: TrainConfig = _CFG):
    return train_quality_model(world["x"], world["y"], np.arange(len(world["y"])), config=cfg,
                               started=world["started"], image_ids=world["image_ids"],
                               title_ids=world["title_ids"])


def test_noise_between_a_titles_images_is_weighed_down() -> None:
    world = _world(image_effect=0.0, seed=5)
    res = _fit(world)
    assert res.metrics["offset_contrast"] < 0.4
    plain = _fit(world, TrainConfig(**{**_CFG.__dict__, "fit_offset_contrast": False}))
    assert "offset_contrast" not in plain.metrics
    title_of = dict(zip(world["image_ids"].tolist(), world["title_ids"].tolist()))
    spread = lambda offsets: float(np.std(within_title_deviation(offsets, title_of, np.array(list(offsets)))))  # noqa: E731
    assert spread(res.image_offsets) < 0.4 * spread(plain.image_offsets)
    # The offsets' title levels are kept: only the differences within a title shrink.
    levels = {t: np.mean([o for i, o in res.image_offsets.items() if title_of[i] == t]) for t in set(title_of.values())}
    plain_levels = {t: np.mean([o for i, o in plain.image_offsets.items() if title_of[i] == t]) for t in levels}
    assert max(abs(levels[t] - plain_levels[t]) for t in levels) < 1e-9
    assert res.metrics["valid_logloss"] < plain.metrics["valid_logloss"]


def test_real_differences_between_a_titles_images_are_kept() -> None:
    world = _world(image_effect=0.6, seed=6)
    res = _fit(world)
    assert res.metrics["offset_contrast"] > 0.8
    title_of = dict(zip(world["image_ids"].tolist(), world["title_ids"].tolist()))
    ids = np.array(sorted(res.image_offsets))
    learned = within_title_deviation(res.image_offsets, title_of, ids)
    assert np.corrcoef(learned, [world["truth"][i] for i in ids])[0, 1] > 0.8
