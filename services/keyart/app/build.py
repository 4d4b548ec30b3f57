"""Build what the platform needs, once: world, features, first model.

`make run` calls `ensure_built`, which skips every step whose output exists, so a
second `make run` goes straight to serving.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from keyart.settings import KeyartSettings

FEATURE_STORE_FILE = "feature_store.yaml"
MATERIALIZED_MARKER = ".materialized"


def resolve_feature_repo(settings: KeyartSettings) -> Path:
    """The Feast repo serving this data dir.

    The embedded `features/` repo points at `<repo root>/var`; any other data dir
    gets its own generated copy under `<data_dir>/feast_repo`.
    """
    embedded = settings.feature_repo_dir
    if (embedded / FEATURE_STORE_FILE).is_file() and (
        (embedded.resolve().parent / "var") == settings.data_dir.resolve()
    ):
        return embedded
    return settings.data_dir / "feast_repo"


def build_world_and_features(
    settings: KeyartSettings,
    seed: int = 7,
    members: int = 2000,
    titles: int = 120,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Build the synthetic world (history ending at `now`, default today 00:00 UTC) and its features."""
    from keyart.jobs.world.synthetic import build_world
    from keyart.jobs.world.features import build_features

    world_dir = build_world(settings.world_dir, seed=seed, members=members, titles=titles, now=now)
    build_features(world_dir)
    meta = json.loads((world_dir / "world.json").read_text())
    return {"world_dir": str(world_dir), "sizes": meta["sizes"], "seed": seed}


def apply_features(settings: KeyartSettings) -> dict[str, Any]:
    """Feast apply + materialize for the world in settings.world_dir."""
    from keyart.adapters.feast.repo import apply_and_materialize, prepare_feature_repo

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


def historical_lookup(settings: KeyartSettings) -> Callable:
    """entity rows -> MemberFeatures as of each row's event_timestamp (Feast offline store)."""
    import pandas as pd

    from keyart.adapters.feast.online import MemberFeatureSource, row_to_member_features
    from keyart.adapters.feast.repo import open_store

    source = MemberFeatureSource(open_store(resolve_feature_repo(settings)))

    def lookup(entity_df: pd.DataFrame) -> list:
        df = source.historical(entity_df).drop(columns=["event_timestamp"])
        rows = []
        for r in df.to_dict("records"):
            # Feast's offline store gives NaN for unknown values and arrays for lists.
            rows.append({k: (v.tolist() if hasattr(v, "tolist") and not isinstance(v, float)
                             else None if isinstance(v, float) and v != v else v) for k, v in r.items()})
        return [row_to_member_features(str(r["member_id"]), r) for r in rows]

    return lookup


def train(
    settings: KeyartSettings,
    log_export: Path | None = None,
    simulate: bool = False,
    pages: int = 4000,
    ips: bool = False,
    promote_after: bool = True,
    seed: int = 11,
) -> dict[str, Any]:
    """Train from a log export, or from a simulated uniform exploration log."""
    from keyart.errors import KeyartError
    from keyart.jobs.world.synthetic import load_world
    from keyart_training.data.dataset import label, read_logged
    from keyart_training.job import run_training

    min_minutes = load_world(settings.world_dir).params.quality_minutes
    if simulate:
        frame = simulate_bootstrap_log(settings, pages=pages, seed=seed)
        source = f"simulated uniform exploration, {pages} pages, seed {seed}"
    elif log_export is not None:
        frame = read_logged(log_export)
        source = str(log_export)
    else:
        raise KeyartError("train: give --log-export PATH or --bootstrap")
    data = label(frame, min_minutes=min_minutes, source=source)
    result = run_training(data, settings.models_dir, ips_weights=ips, promote_after=promote_after, source=source)
    return {"version": result.version, "path": str(result.path), "metrics": result.metrics,
            "promoted": result.promoted}


def simulate_bootstrap_log(settings: KeyartSettings, pages: int, seed: int):  # -> pd.DataFrame
    from keyart.core.featurize import CatalogIndex
    from keyart.adapters.catalog.parquet import load_catalog
    from keyart.jobs.world.synthetic import load_world
    from keyart_training.simulate import simulate_pages

    world = load_world(settings.world_dir)
    index = CatalogIndex.build(load_catalog(settings.world_dir))
    frame = simulate_pages(world, index, historical_lookup(settings), pages=pages, seed=seed, progress=True)
    out = settings.log_dir / "bootstrap_log.parquet"
    out.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(out, index=False)
    return frame


def ensure_built(settings: KeyartSettings, say: Callable[[str], None]) -> None:
    """World, features and a promoted model: build each one that is missing."""
    from keyart.core.model import current_version

    if not (settings.world_dir / "world.json").is_file():
        say("building the demo world ...")
        build_world_and_features(settings)
    if not (settings.data_dir / "feast" / MATERIALIZED_MARKER).is_file():
        say("applying and materializing Feast features ...")
        apply_features(settings)
    if current_version(settings.models_dir) is None:
        say("training the first model on a simulated exploration log ...")
        result = train(settings, simulate=True)
        say(f"model {result['version']} promoted (valid AUC {result['metrics']['valid_auc']:.3f})")
