"""Retrain Keyart on a log that `make bench-quality` left in var/, and score greedy closure.

A learner experiment without the 8 minutes of gRPC exploration per world: the same
exported log, the same hold-out, the same held-out decisions and the same scoring as
`quality.run`, with `TrainConfig` fields overridden. The features are the log's, so a
change to the member features (Feast tables) still needs a full `make bench-quality`.

    PYTHONPATH=bench .venv/bin/python -m quality.retrain --world genre_lens seed=8 learning_rate=0.03

Prints one JSON line: the overrides, greedy value and closure, and the model's metrics.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import fields, replace
from pathlib import Path

import numpy as np
import pandas as pd

from quality.keyart_path import REPO
from quality.run import _training_rows, heldout_of_log
from quality.scoring import KeyartScorer, candidates, closure, default_settings
from quality.worlds import make_world


def _override(cfg, pairs: list[str]):
    kinds = {f.name: f for f in fields(cfg)}
    changes = {}
    for pair in pairs:
        key, _, raw = pair.partition("=")
        if key not in kinds:
            raise SystemExit(f"unknown TrainConfig field {key!r}; known: {sorted(kinds)}")
        current = getattr(cfg, key)
        changes[key] = json.loads(raw) if not isinstance(current, str) else raw
        if isinstance(current, tuple):
            changes[key] = tuple(tuple(v) if isinstance(v, list) else v for v in changes[key])
    return replace(cfg, **changes)


def main(argv: list[str] | None = None) -> int:
    from keyart.app.cli.training import _aligned, _catalog_index, _min_minutes
    from keyart.core.model import load_model
    from keyart.settings import KeyartSettings
    from keyart_training.data.dataset import label, read_logged
    from keyart_training.data.window import holdout_split
    from keyart_training.job import run_training
    from keyart_training.train import TrainConfig
    from quality.peers import non_contextual

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--world", required=True)
    ap.add_argument("--work", type=Path, default=REPO / "var" / "bench-quality")
    ap.add_argument("--seed", type=int, default=2026, help="The bench's traffic seed (held-out draws use seed + 1).")
    ap.add_argument("--heldout", type=int, default=5_000)
    ap.add_argument("overrides", nargs="*", help="TrainConfig field=value (JSON values).")
    args = ap.parse_args(argv)
    world = make_world(args.world)
    base = args.work / args.world
    settings = KeyartSettings(data_dir=base / "data", feature_repo_dir=REPO / "features")
    log = pd.read_parquet(base / "log.parquet")
    index = _catalog_index(settings)
    frame = _aligned(settings, read_logged(base / "log.parquet"), index)
    split = holdout_split(frame, 0.2, "bench log")
    data = label(split.train, _min_minutes(settings, None), index.space, source="bench log")
    cfg = _override(TrainConfig(), args.overrides)
    with tempfile.TemporaryDirectory() as models:
        result = run_training(data, Path(models), cfg, promote_after=False, source="retrain",
                              holdout_from=split.holdout_from, holdout_share=0.2,
                              holdout_rows=int(len(split.holdout)),
                              catalog_lineages=index.catalog.lineages())
        model = load_model(result.path)
        meta = json.loads((result.path / "meta.json").read_text())
    rows, _ = _training_rows(log, meta)
    heldout = heldout_of_log(world, log, args.seed, args.heldout)
    cands = candidates(world, heldout)
    scorer = KeyartScorer(default_settings(base / "data", REPO / "features"), model,
                          exposure=log["image_id"].value_counts().to_dict())
    greedy = scorer.configs()["keyart_greedy"]
    value = float(cands.distribution_values(scorer.distributions(world, heldout, cands, greedy)).mean())
    y = (rows["max_minutes"].to_numpy(float) >= world.quality_minutes).astype(float)
    image_ids = np.array([world.image_id(i) for i in cands.image], dtype=object)
    nc = float(cands.choice_values(non_contextual(rows["image_id"].to_numpy(), y)(image_ids)).mean())
    keep = ("valid_logloss", "valid_logloss_non_contextual", "rounds", "rounds_stay", "num_leaves",
            "num_leaves_stay", "extra_trees", "extra_trees_stay", "image_prior_rows", "stay_prior_rows",
            "offset_contrast", "offset_contrast_se",
            "stay_offset_contrast", "stay_offset_contrast_se", "images_sharing_a_lineage")
    print(json.dumps({"world": args.world, "overrides": args.overrides, "greedy_value": round(value, 5),
                      "closure": round(closure(value, nc, cands.oracle()), 4),
                      "metrics": {k: result.metrics.get(k) for k in keep}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
