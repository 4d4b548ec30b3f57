"""Feature spaces by id: which columns a logged feature vector follows.

Every decision is logged with the id of the feature space its vector follows
(`Impression.feature_schema`): the serving model's, or the catalog's own before a
first model. Serving records each space it featurizes with here (one small JSON
file per id, written once), and every model artifact carries its own, so training
and evaluation can read a log written under an older catalog or another model and
translate it (`keyart_training.data.dataset.align_features`) instead of refusing it.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from keyart.core.feature_space import FeatureSpace, FeatureSpaceError

log = logging.getLogger(__name__)


def record_space(directory: Path, space: FeatureSpace) -> Path:
    """Write `space` as directory/<schema_id>.json unless it is there (atomic)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{space.schema_id}.json"
    if not path.is_file():
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(space.to_dict(), indent=1, sort_keys=True))
        tmp.replace(path)
    return path


def known_spaces(spaces_dir: Path, models_dir: Path | None = None) -> dict[str, FeatureSpace]:
    """Every space recorded by serving or carried by a model artifact, by schema id.

    An unreadable file is skipped with a warning: it cannot translate anything, and
    rows of its id are then refused by name where they are used.
    """
    out: dict[str, FeatureSpace] = {}
    paths = sorted(spaces_dir.glob("*.json")) if spaces_dir.is_dir() else []
    for path in paths:
        try:
            space = FeatureSpace.from_dict(json.loads(path.read_text()))
        except (OSError, ValueError, FeatureSpaceError) as exc:
            log.warning("%s: not a feature space (%s)", path, exc)
            continue
        out[space.schema_id] = space
    for meta in sorted(models_dir.glob("*/meta.json")) if models_dir is not None and models_dir.is_dir() else []:
        try:
            raw = json.loads(meta.read_text()).get("feature_space")
            if raw is not None:
                space = FeatureSpace.from_dict(raw)
                out[space.schema_id] = space
        except (OSError, ValueError, AttributeError, FeatureSpaceError) as exc:
            log.warning("%s: no readable feature space (%s)", meta, exc)
    return out
