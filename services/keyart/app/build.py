"""Build what the platform needs, once: world, features, first model.

`make run` calls `ensure_built`, which skips every step whose output exists, so a
second `make run` goes straight to serving. An imported catalog gets no first model
here (it has no ground truth to simulate outcomes): it is served exploring uniformly.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from keyart.adapters.feast.repo import resolve_feature_repo
from keyart.settings import KeyartSettings

MATERIALIZED_MARKER = ".materialized"


def build_world_and_features(
    settings: KeyartSettings,
    seed: int = 7,
    members: int = 2000,
    titles: int = 120,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Build the synthetic world (history ending at `now`, default today 00:00 UTC) and its features."""
    from keyart.jobs.world.features import build_features
    from keyart.jobs.world.synthetic import build_world

    world_dir = build_world(settings.world_dir, seed=seed, members=members, titles=titles, now=now)
    build_features(world_dir)
    meta = json.loads((world_dir / "world.json").read_text())
    return {"world_dir": str(world_dir), "sizes": meta["sizes"], "seed": seed}


def apply_features(settings: KeyartSettings) -> dict[str, Any]:
    """Feast apply + materialize for the world in settings.world_dir."""
    from keyart.adapters.feast.repo import apply_and_materialize, prepare_feature_repo, resolve_feature_repo

    meta = json.loads((settings.world_dir / "world.json").read_text())
    end = datetime.fromisoformat(meta["now"]) + timedelta(days=1)
    repo = resolve_feature_repo(settings)
    if repo != settings.feature_repo_dir:
        repo = prepare_feature_repo(settings.data_dir, settings.feature_repo_dir)
    apply_and_materialize(repo, end=end)
    marker = settings.data_dir / "feast" / MATERIALIZED_MARKER
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(end.isoformat())
    return {"repo": str(repo), "materialized_until": end.isoformat()}


def train_on_simulated_log(
    settings: KeyartSettings, pages: int = 4000, seed: int = 11, promote: bool = True
) -> dict[str, Any]:
    """Train a model on a simulated uniform exploration log of the world (the first model)."""
    from keyart.adapters.catalog.parquet import load_catalog
    from keyart.core.feature_space import FeatureSpace
    from keyart.jobs.world.world_model import load_world
    from keyart_training.data.dataset import label
    from keyart_training.job import run_training

    min_minutes = load_world(settings.world_dir).params.quality_minutes
    frame = simulate_bootstrap_log(settings, pages=pages, seed=seed)
    source = f"simulated uniform exploration, {pages} pages, seed {seed}"
    catalog = load_catalog(settings.world_dir)
    space = FeatureSpace.from_catalog(catalog)  # the space simulate_pages used
    data = label(frame, min_minutes=min_minutes, space=space, source=source)
    result = run_training(data, settings.models_dir, promote_after=promote, source=source,
                          catalog_lineages=catalog.lineages())
    return {"version": result.version, "path": str(result.path), "metrics": result.metrics,
            "promoted": result.promoted}


def simulate_bootstrap_log(settings: KeyartSettings, pages: int, seed: int):  # -> pd.DataFrame
    from keyart.adapters.catalog.parquet import load_catalog
    from keyart.adapters.feast.online import historical_member_lookup
    from keyart.core.featurize import CatalogIndex
    from keyart.jobs.world.world_model import load_world
    from keyart_training.simulate import simulate_pages

    world = load_world(settings.world_dir)
    index = CatalogIndex.build(load_catalog(settings.world_dir))
    lookup = historical_member_lookup(resolve_feature_repo(settings))
    frame = simulate_pages(world, index, lookup, pages=pages, seed=seed, progress=True)
    out = settings.log_dir / "bootstrap_log.parquet"
    out.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(out, index=False)
    return frame


def has_ground_truth(world_dir: Path) -> bool:
    """Whether the world carries hidden ground truth (the synthetic world does, an imported
    catalog does not), read from the Parquet schemas only."""
    import pyarrow.parquet as pq

    from keyart.jobs.world.world_model import LATENT_COLUMNS

    for table, columns in LATENT_COLUMNS.items():
        path = world_dir / f"{table}.parquet"
        if not path.is_file() or not set(columns) <= set(pq.read_schema(path).names):
            return False
    return True


def ensure_built(settings: KeyartSettings, say: Callable[[str], None]) -> None:
    """World, features and a first model: build each one that is missing.

    Without a world, the demo world is built. A world without ground truth (a catalog
    brought in with `keyart world import`) cannot simulate a first model's training log:
    it is served without a model, exploring uniformly, until a model trained on its own
    decision log is promoted.
    """
    from keyart.core.model import current_version

    if not (settings.world_dir / "world.json").is_file():
        say("building the demo world ...")
        build_world_and_features(settings)
    if not (settings.data_dir / "feast" / MATERIALIZED_MARKER).is_file():
        say("applying and materializing Feast features ...")
        apply_features(settings)
    if current_version(settings.models_dir) is not None:
        return
    if not has_ground_truth(settings.world_dir):
        say("no model yet: exploring uniformly (an imported catalog has no ground truth to simulate a first "
            "model's log; train one on the decision log: keyart log export, keyart train --log-export, "
            "keyart models promote)")
        return
    say("training the first model on a simulated exploration log ...")
    result = train_on_simulated_log(settings)
    say(f"model {result['version']} promoted (valid AUC {result['metrics']['valid_auc']:.3f})")
