"""Image offsets pooled over a lineage: versions of one artwork learn from each other's rows."""

from __future__ import annotations

import numpy as np
import pytest

from keyart_training.train import _logit, image_offsets


def test_an_image_alone_in_its_lineage_gets_what_it_would_without() -> None:
    rng = np.random.default_rng(1)
    ids = rng.choice(["a", "b", "c"], 3_000)
    y = (rng.random(3_000) < 0.2).astype(float)
    rows = np.arange(3_000)
    plain = image_offsets(ids, y, rows, 30.0)
    alone = image_offsets(ids, y, rows, 30.0, {"a": "La", "b": "Lb", "c": "Lc"})
    assert alone == pytest.approx(plain, abs=1e-12)


def test_siblings_pool_and_a_new_version_starts_from_its_artwork() -> None:
    # "a" is well known and strong; "a_text", its text variant, was shown 10 times with no play.
    ids = np.array(["a"] * 1_000 + ["a_text"] * 10 + ["b"] * 1_000)
    y = np.concatenate([np.r_[np.ones(400), np.zeros(600)], np.zeros(10), np.r_[np.ones(100), np.zeros(900)]])
    rows = np.arange(len(y))
    lineage = {"a": "L1", "a_text": "L1", "a_crop": "L1", "b": "L2", "new": "L9"}
    plain = image_offsets(ids, y, rows, 30.0)
    pooled = image_offsets(ids, y, rows, 30.0, lineage)
    mean = float(np.mean(y))
    # Alone, ten misses pull a_text below the mean; its sibling's 40 % pulls it well above.
    assert plain["a_text"] < 0 < pooled["a_text"]
    # Exactly: shrunk with 30 pseudo-rows of its sibling's rate, itself shrunk to the mean.
    sibling = (400 + 30 * mean) / (1_000 + 30)
    assert pooled["a_text"] == pytest.approx(float(_logit((0 + 30 * sibling) / (10 + 30)) - _logit(mean)))
    # A version never shown starts at its siblings' pooled rate; a lineage never shown stays out.
    siblings = (400 + 30 * mean) / (1_010 + 30)
    assert pooled["a_crop"] == pytest.approx(float(_logit(siblings) - _logit(mean)))
    assert "new" not in pooled and "a_crop" not in plain


def test_pooling_finds_the_appeal_of_versions_better() -> None:
    """Versions share their artwork's appeal: pooled offsets track it closer than each alone."""
    rng = np.random.default_rng(7)
    artworks, versions, n = 300, 3, 40_000
    appeal = rng.normal(0.0, 0.5, artworks)
    image = rng.integers(0, artworks * versions, n)
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-(-1.5 + appeal[image // versions])))).astype(float)
    ids = np.array([f"i{k}" for k in image])
    lineage = {f"i{k}": f"L{k // versions}" for k in range(artworks * versions)}
    truth = np.array([appeal[k // versions] for k in range(artworks * versions)])
    rows = np.arange(n)
    corr = {}
    for name, lin in (("plain", None), ("pooled", lineage)):
        off = image_offsets(ids, y, rows, 30.0, lin)
        corr[name] = np.corrcoef([off[f"i{k}"] for k in range(artworks * versions)], truth)[0, 1]
    assert corr["pooled"] > corr["plain"] + 0.05


def test_a_catalog_version_the_log_never_showed_starts_from_its_logged_siblings() -> None:
    """`train_quality_model(catalog_lineages=...)`: the served model's offsets cover a crop
    of a strong artwork that no decision showed yet, and an unrelated unlogged image stays out."""
    from keyart_training.train import TrainConfig, train_quality_model

    rng = np.random.default_rng(3)
    n = 12_000
    image = rng.integers(0, 4, n)  # images 0-3, each in its own lineage; 0 is the strong one
    rate = np.array([0.45, 0.15, 0.15, 0.15])[image]
    started = (rng.random(n) < rate).astype(float)
    y = started * (rng.random(n) < 0.5)
    ids = np.array([f"i{k}" for k in image])
    x = rng.random((n, 3))
    cfg = TrainConfig(num_leaves=7, min_data_in_leaf=50, max_rounds=30, early_stopping_rounds=5, ensemble_size=0,
                      num_threads=1, search=(), search_extra_trees=False, image_prior_rows=(30.0,),
                      stay_prior_rows=(30.0,), fit_offset_contrast=False)
    catalog = {"i0": "L0", "i0_crop": "L0", "i1": "L1", "i2": "L2", "i3": "L3", "i9": "L9"}
    fit = train_quality_model(x, y, np.arange(n), config=cfg, started=started, image_ids=ids,
                              lineage_ids=np.array([catalog[i] for i in ids]), catalog_lineages=catalog)
    without = train_quality_model(x, y, np.arange(n), config=cfg, started=started, image_ids=ids,
                                  lineage_ids=np.array([catalog[i] for i in ids]))
    assert "i0_crop" not in without.image_offsets
    assert fit.image_offsets["i0_crop"] > 0.5  # the strong artwork's rate, not the mean's 0
    assert fit.image_offsets["i0_crop"] == pytest.approx(fit.image_offsets["i0"], abs=0.05)
    assert "i0_crop" in fit.stay_offsets
    assert "i9" not in fit.image_offsets
    # Logged images are untouched by the catalog's extra entries.
    assert {k: fit.image_offsets[k] for k in without.image_offsets} == pytest.approx(without.image_offsets)
