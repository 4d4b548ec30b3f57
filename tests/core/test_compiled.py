"""Compiled forests score as LightGBM does, are cached, and never replace a forest that disagrees."""

from __future__ import annotations

import numpy as np
import pytest
from tiny import make_context, make_member, make_model

from keyart.core import compiled as compiled_mod
from keyart.core.compiled import with_compiled_trees
from keyart.core.featurize import build_matrix
from keyart.core.model import load_model, save_model


@pytest.fixture(scope="module")
def saved(tmp_path_factory, tiny_index):
    model = make_model(ensemble=2)
    out = save_model(tmp_path_factory.mktemp("models"), "m-tiny", model.booster, model.space, model.ensemble)
    return load_model(out), out


def test_compiled_forests_score_as_lightgbm(saved, tiny_index) -> None:
    model, path = saved
    fast = with_compiled_trees(model, path)
    assert fast.meta["compiled_trees"] == {"compiled": ["start", "start_0", "start_1"], "lightgbm": {}}
    catalog = tiny_index.catalog
    ids = [i for t in sorted(catalog.titles) for i in catalog.pool(t)]
    rows = np.array([tiny_index.image_row[i] for i in ids])
    of = np.repeat(np.arange(len(catalog.titles)), [len(catalog.pool(t)) for t in sorted(catalog.titles)])
    x = build_matrix(tiny_index, make_member(), make_context(device="MOBILE"), sorted(catalog.titles), rows, of)
    np.testing.assert_allclose(fast.predict(x, ids), model.predict(x, ids), rtol=0, atol=1e-12)
    np.testing.assert_allclose(fast.predict_ensemble(x, ids), model.predict_ensemble(x, ids), rtol=0, atol=1e-12)
    cached = sorted(p.name for p in (path / "compiled").iterdir())
    assert len(cached) == 3 and all(p.endswith(".so") for p in cached)
    again = with_compiled_trees(model, path, ensemble=False)  # loads the cached binary
    assert again.meta["compiled_trees"]["compiled"] == ["start"]
    np.testing.assert_allclose(again.predict(x, ids), model.predict(x, ids), rtol=0, atol=1e-12)


def test_a_forest_that_disagrees_or_fails_stays_on_lightgbm(saved, monkeypatch) -> None:
    model, path = saved
    real = compiled_mod.compile_forest

    def flawed(model_file, cache_dir):
        if model_file.name == "ensemble_0.txt":
            raise RuntimeError("LLVM said no")
        predict = real(model_file, cache_dir)
        return (lambda x: predict(x) + 1e-6) if model_file.name == "model.txt" else predict

    monkeypatch.setattr(compiled_mod, "compile_forest", flawed)
    fast = with_compiled_trees(model, path)
    report = fast.meta["compiled_trees"]
    assert report["compiled"] == ["start_1"]
    assert "differ from LightGBM" in report["lightgbm"]["start"] and "LLVM said no" in report["lightgbm"]["start_0"]
    x = np.random.default_rng(1).random((50, len(model.space.names)))
    np.testing.assert_array_equal(fast.predict(x), model.predict(x))  # the start head is LightGBM's own
