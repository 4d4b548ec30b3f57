"""Compiled trees: a model's forests as machine code (lleaves, LLVM), LightGBM as the fallback.

LightGBM's predict was the largest cost of a page (two heads over 480 candidates,
about 3 ms of CPU); the same forests compiled by lleaves score the page in a
fraction of that with outputs equal to 1e-9. Compilation takes a few seconds per
forest, so it runs when a model is loaded for serving (the model watcher's thread,
never a request) and its result is cached next to the model, keyed by the forest
file's hash, the lleaves version and the host CPU (a binary compiled for another
CPU must never be loaded). Each compiled forest is checked against LightGBM on a
probe matrix before it is used; any failure, at compile time or on the check,
leaves that forest on LightGBM and says why.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np

from keyart.core.model import QualityPlayModel

log = logging.getLogger(__name__)

CACHE_DIR = "compiled"
MATCH_TOLERANCE = 1e-9  # on the raw score (logit)

# A compiled forest: rows -> raw scores (logits), shape (n,).
RawPredict = Callable[[np.ndarray], np.ndarray]


def _host_key() -> str:
    import lleaves
    import llvmlite.binding as llvm

    features = llvm.get_host_cpu_features().flatten()
    return f"{getattr(lleaves, '__version__', '?')}|{llvm.get_host_cpu_name()}|{features}"


def _probe(model: QualityPlayModel, n: int = 256, seed: int = 0) -> np.ndarray:
    """Rows that reach every kind of split: category codes (unknown included), numbers, NaN."""
    rng = np.random.default_rng(seed)
    width = model.booster.num_feature()
    x = rng.normal(0.0, 3.0, size=(n, width))
    x[rng.random((n, width)) < 0.1] = np.nan
    if model.space is not None:
        for name in model.space.categorical:
            j = model.space.index[name]
            x[:, j] = rng.integers(0, len(model.space.vocabularies[name]) + 1, n)
    return x


def compile_forest(model_file: Path, cache_dir: Path) -> RawPredict:
    """The forest of a LightGBM model file compiled to a raw-score predictor (cached)."""
    import lleaves

    key = hashlib.sha256(model_file.read_bytes() + _host_key().encode()).hexdigest()[:20]
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / f"{model_file.stem}.{key}.so"
    forest = lleaves.Model(model_file=str(model_file))
    if path.is_file():
        forest.compile(cache=str(path), raw_score=True)
    else:
        tmp = cache_dir / f".{path.name}.{os.getpid()}.tmp"
        forest.compile(cache=str(tmp), raw_score=True)
        tmp.replace(path)  # atomic: another replica never loads half a binary

    def predict(x: np.ndarray) -> np.ndarray:
        return np.asarray(forest.predict(np.ascontiguousarray(x, dtype=np.float64), n_jobs=1), dtype=np.float64)

    return predict


def _forest_files(model: QualityPlayModel, directory: Path, ensemble: bool) -> dict[str, Path]:
    files = {"start": directory / "model.txt"}
    if model.stay is not None:
        files["stay"] = directory / "stay.txt"
    if not ensemble:
        return files
    for k in range(len(model.ensemble)):
        files[f"start_{k}"] = directory / f"ensemble_{k}.txt"
    for k in range(len(model.ensemble_stay)):
        files[f"stay_{k}"] = directory / f"ensemble_{k}_stay.txt"
    return files


def with_compiled_trees(model: QualityPlayModel, directory: Path, ensemble: bool = True) -> QualityPlayModel:
    """`model` scoring through compiled forests where each compiled and matched LightGBM.

    `directory` is the model artifact's; binaries are cached in its `compiled/`. The
    Thompson ensemble's forests are compiled with `ensemble` (only Thompson sampling
    scores them on the request path).
    A forest that cannot be compiled, or whose scores differ from LightGBM's by more
    than MATCH_TOLERANCE on a probe, stays on LightGBM (logged, and listed in
    `model.meta["compiled_trees"]`).
    """
    boosters = {"start": model.booster, "stay": model.stay}
    boosters |= {f"start_{k}": b for k, b in enumerate(model.ensemble)}
    boosters |= {f"stay_{k}": b for k, b in enumerate(model.ensemble_stay)}
    probe = _probe(model)
    compiled: dict[str, RawPredict] = {}
    refused: dict[str, str] = {}
    for name, path in _forest_files(model, directory, ensemble).items():
        booster = boosters[name]
        assert booster is not None
        try:
            predict = compile_forest(path, directory / CACHE_DIR)
            gap = float(np.max(np.abs(predict(probe) - booster.predict(probe, raw_score=True, num_threads=1))))
        except Exception as exc:  # noqa: BLE001 - any failure keeps LightGBM, which always works
            refused[name] = f"{type(exc).__name__}: {exc}"
            continue
        if not gap <= MATCH_TOLERANCE:
            refused[name] = f"scores differ from LightGBM by {gap:.3g}"
            continue
        compiled[name] = predict
    for name, why in refused.items():
        log.warning("model %s: forest %s stays on LightGBM (%s)", model.version, name, why)
    meta = {**model.meta, "compiled_trees": {"compiled": sorted(compiled), "lightgbm": refused}}
    return replace(model, compiled=compiled, meta=meta)


__all__ = ["MATCH_TOLERANCE", "RawPredict", "compile_forest", "with_compiled_trees"]
