"""A customer's declared image attribute becomes a feature the model learns from."""

from __future__ import annotations

import numpy as np
import pandas as pd
from tiny import make_context, make_member, open_catalog

from keyart.core.featurize import CatalogIndex, build_matrix
from keyart_training.train import TrainConfig, train_quality_model


def test_a_declared_attribute_carries_the_signal_it_has() -> None:
    """Plays depend only on the customer's own `cv_smile` and `cv_scene`: the model finds them."""
    index = CatalogIndex.build(open_catalog())
    space = index.space
    rng = np.random.default_rng(5)
    ids = sorted(index.catalog.images)
    n = 6000
    pick = rng.integers(0, len(ids), n)
    rows = np.array([index.image_row[ids[k]] for k in pick])
    titles = [index.catalog.images[ids[k]].title_id for k in pick]
    x = build_matrix(index, make_member(), make_context(), titles, rows, np.arange(n))
    smile = x[:, space.index["attr_cv_smile"]]
    beach = x[:, space.index["attr_cv_scene"]] == space.code("attr_cv_scene", "beach")
    y = (rng.random(n) < 1 / (1 + np.exp(-(6 * smile - 2.5 + 1.0 * beach)))).astype(float)
    cfg = TrainConfig(num_leaves=7, max_rounds=80, early_stopping_rounds=10, ensemble_size=0, num_threads=1,
                      min_data_in_leaf=20, search=(), image_prior_rows=())
    res = train_quality_model(x, y, pd.date_range("2026-01-01", periods=n, freq="min").to_numpy(), config=cfg,
                              space=space)
    gain = dict(zip(res.booster.feature_name(), res.booster.feature_importance("gain")))
    top = sorted(gain, key=gain.get, reverse=True)[:2]  # type: ignore[arg-type]
    assert set(top) == {"attr_cv_smile", "attr_cv_scene"}, top
    assert res.metrics["valid_auc"] > 0.7
