"""Install a validated catalog as the world: ``import_world``, all or nothing.

This module exists to keep the one operation that touches the live world
directory apart from the checks (keyart.jobs.world.import_validate) and the format
(keyart.jobs.world.import_schema). The installed world is the Parquet files (images
with the declared attribute columns), ``catalog.json`` (image attributes, vocabularies,
tone -> genre; see import_schema), ``world.json`` and the derived feature tables.
Everything is written and derived in a staging directory next to ``world_dir``,
fsynced, and renamed into place; on any failure the staging directory is removed
and the previous world is untouched.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from keyart.jobs.world.import_issues import Issue, WorldImportError
from keyart.jobs.world.import_manifest import Manifest
from keyart.jobs.world.import_schema import (
    CATALOG,
    IMAGES,
    TABLE_KEYS,
    TABLES,
    VOCABULARY_KEYS,
    images_table,
    write_parquet,
)
from keyart.jobs.world.import_validate import validate_world_dir
from keyart.jobs.world.params import WorldParams


def _default_now(viewing: pd.DataFrame) -> datetime:
    if len(viewing):
        last = pd.Timestamp(viewing["event_timestamp"].max()).tz_convert("UTC")
        day = last.normalize()
        return (day if day == last else day + pd.Timedelta(days=1)).to_pydatetime()
    return datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def _end_of_history(now: datetime | None, manifest: Manifest, viewing: pd.DataFrame) -> datetime:
    """``now`` (the caller's), else the manifest's, else derived from the viewing."""
    if now is not None and now.tzinfo is None:
        raise WorldImportError([Issue("--now", None, None, "must be timezone-aware")])
    return (now.astimezone(UTC) if now is not None else None) or manifest.now or _default_now(viewing)


def _params(manifest: Manifest) -> WorldParams:
    return WorldParams.model_validate(
        {k: v for k, v in (("history_days", manifest.history_days),
                           ("quality_minutes", manifest.quality_minutes)) if v is not None}
    )


def _world_meta(src: Path, tables: dict[str, pd.DataFrame], params: WorldParams, end: datetime) -> dict[str, Any]:
    """The world.json of an imported world (seed 0, no ground truth)."""
    return {
        "seed": 0,
        "imported": True,
        "source": str(src.resolve()),
        "imported_at": datetime.now(UTC).isoformat(),
        "sizes": {
            "members": len(tables["members"]),
            "titles": len(tables["titles"]),
            "images": len(tables["images"]),
            "actors": len({a for c in tables["titles"]["cast"] for a in c}),
            "viewing_events": len(tables["viewing"]),
        },
        "params": params.model_dump(mode="json"),
        "now": end.isoformat(),
    }


def _write_tables(tables: dict[str, pd.DataFrame], manifest: Manifest, staging: Path) -> None:
    for spec in TABLES:
        key = TABLE_KEYS[spec.file]
        if spec.file == IMAGES.file:
            spec = images_table(manifest.image_attributes)  # the attributes after the fixed columns
        if key in tables:
            write_parquet(tables[key], spec, staging / spec.file)


def catalog_meta(members: pd.DataFrame, manifest: Manifest) -> dict[str, Any]:
    """The catalog.json of an imported world: the declared image attributes, each
    vocabulary as the sorted union of the members' values and the declared ones, and
    the tone -> genre map."""
    vocabularies = {
        key: sorted({str(v) for v in members[key]} | set(manifest.vocabularies.get(key, ())))
        for key in VOCABULARY_KEYS
    }
    return {
        "image_attributes": dict(manifest.image_attributes),
        "vocabularies": vocabularies,
        "tone_genre": dict(manifest.tone_genre),
    }


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:  # pragma: no cover
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_all(staging: Path) -> None:
    for p in staging.iterdir():
        with open(p, "rb") as fh:
            os.fsync(fh.fileno())
    _fsync_dir(staging)


def _swap_in(staging: Path, world_dir: Path, token: str) -> None:
    """Rename ``staging`` to ``world_dir``; the previous world is kept until then and
    restored if the rename fails."""
    old: Path | None = None
    if world_dir.exists():
        old = world_dir.parent / f".{world_dir.name}-old-{token}"
        os.rename(world_dir, old)
    try:
        os.rename(staging, world_dir)
    except BaseException:
        if old is not None:
            os.rename(old, world_dir)
        raise
    _fsync_dir(world_dir.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _later_events(viewing: pd.DataFrame, end: datetime) -> int:
    return int((viewing["event_timestamp"] > pd.Timestamp(end)).sum()) if len(viewing) else 0


def import_world(
    src: Path,
    world_dir: Path,
    *,
    now: datetime | None = None,
    derive: Callable[[Path], Any] | None = None,
) -> dict[str, Any]:
    """Validate ``src`` and replace ``world_dir`` with it (atomically), feature tables
    included. ``now`` overrides the manifest's. Returns a summary (sizes, now, paths).

    Raises WorldImportError (nothing changed) when a file is invalid.
    """
    from keyart.jobs.world.features import build_features

    src, world_dir = Path(src), Path(world_dir)
    tables, manifest = validate_world_dir(src)
    end = _end_of_history(now, manifest, tables["viewing"])
    params = _params(manifest)
    world_dir.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(4)
    staging = world_dir.parent / f".{world_dir.name}-import-{token}"
    staging.mkdir()
    try:
        _write_tables(tables, manifest, staging)
        catalog = catalog_meta(tables["members"], manifest)
        (staging / CATALOG).write_text(json.dumps(catalog, indent=2) + "\n")  # declared order kept
        later = _later_events(tables["viewing"], end)
        meta = _world_meta(src, tables, params, end)
        (staging / "world.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
        (derive or build_features)(staging)
        _fsync_all(staging)
        _swap_in(staging, world_dir, token)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    warnings = []
    if later:
        warnings.append(f"{later} viewing events after now={end.isoformat()} are ignored by the features")
    return {
        "world_dir": str(world_dir),
        "sizes": meta["sizes"],
        "now": end.isoformat(),
        "history_days": params.history_days,
        "quality_minutes": params.quality_minutes,
        "files": sorted(p.name for p in world_dir.iterdir()),
        "warnings": warnings,
    }


__all__ = ["catalog_meta", "import_world"]
