"""Extremely randomized trees are one more candidate of the head's grid, chosen by validation log-loss."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from keyart_training.train import TrainConfig, train_quality_model

_CFG = TrainConfig(num_leaves=7, min_data_in_leaf=50, max_rounds=60, early_stopping_rounds=10, ensemble_size=0,
                   num_threads=1, search=(), image_prior_rows=(), stay_prior_rows=())


def _data(kind: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """"faint": a smooth interaction under noise (random thresholds fit it better);
    "sharp": one exact corner (the best thresholds fit it better)."""
    rng = np.random.default_rng(seed)
    n = 20_000
    x = rng.random((n, 6))
    if kind == "faint":
        logit = -1.5 + 3.2 * (x[:, 0] - 0.5) * (x[:, 1] - 0.5) + 0.5 * x[:, 2]
    else:
        logit = -2.0 + 4.0 * (x[:, 0] > 0.37) * (x[:, 1] > 0.61)
    return x, (rng.random(n) < 1.0 / (1.0 + np.exp(-logit))).astype(float)


@pytest.mark.parametrize(("kind", "seed", "chosen"), [("faint", 1, True), ("faint", 2, True), ("sharp", 1, False)])
def test_the_grid_keeps_whichever_validates_better(kind: str, seed: int, chosen: bool) -> None:
    x, y = _data(kind, seed)
    fit = lambda cfg: train_quality_model(x, y, np.arange(len(y)), config=cfg)  # noqa: E731
    plain = fit(replace(_CFG, search_extra_trees=False))
    extra = fit(replace(_CFG, search_extra_trees=False, extra_trees=True))
    both = fit(_CFG)
    assert plain.metrics["extra_trees"] is False and extra.metrics["extra_trees"] is True
    assert plain.metrics["valid_logloss"] != pytest.approx(extra.metrics["valid_logloss"], abs=1e-9)
    best = min((plain, extra), key=lambda r: r.metrics["valid_logloss"])
    assert both.metrics["extra_trees"] is best.metrics["extra_trees"] is chosen
    assert both.metrics["valid_logloss"] == pytest.approx(best.metrics["valid_logloss"], abs=1e-12)
    # The served forest is trained the way the grid chose.
    assert both.booster.params.get("extra_trees", False) is best.metrics["extra_trees"]
