"""Export a world (synthetic or imported) in the import format: ``export_world``.

This module exists because export is the inverse of import and needs only the
format (keyart.jobs.world.import_schema), not the validator or the atomic install:
it writes the declared columns of each file (images with the world's attribute
columns), never the hidden ground truth nor the derived feature tables, and a
manifest carrying catalog.json's image attributes, vocabularies and tone -> genre
map, so that export then import round-trips the catalog, the member features, the
attributes and the vocabularies.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from keyart.errors import KeyartError
from keyart.jobs.world.import_schema import (
    CATALOG,
    FORMAT,
    IMAGES,
    MANIFEST,
    MEMBERS,
    TABLES,
    VOCABULARY_KEYS,
    Column,
    Table,
    images_table,
    write_parquet,
)


def _export_column(df: pd.DataFrame, col: Column) -> Any:
    """Column ``col`` of ``df`` as exported: its default when absent (a copy of its
    ``default_from`` column), timestamps in UTC nanoseconds, lists of strings (a null
    list becomes empty)."""
    if col.name not in df.columns:
        if col.default_from is not None:
            return df[col.default_from]
        return [list(col.default or ())] * len(df) if col.kind == "list<string>" else col.default
    if col.kind == "timestamp":
        return pd.to_datetime(df[col.name], utc=True).dt.as_unit("ns")
    if col.kind == "list<string>":
        return [[str(x) for x in v] if v is not None else [] for v in df[col.name]]
    return df[col.name]


def _export_frame(path: Path, spec: Table) -> pd.DataFrame:
    df = pd.read_parquet(path)
    for col in spec.columns:
        df[col.name] = _export_column(df, col)
    return df


def _catalog_meta(world_dir: Path) -> dict[str, Any]:
    path = world_dir / CATALOG
    raw = json.loads(path.read_text()) if path.is_file() else {}
    return raw if isinstance(raw, dict) else {}


def _export_manifest(meta: dict[str, Any], catalog: dict[str, Any], members: pd.DataFrame) -> dict[str, Any]:
    params = meta.get("params", {})
    declared = catalog.get("vocabularies") or {}
    vocabularies = {
        key: sorted({str(v) for v in declared.get(key, ())} | {str(v) for v in members[key]})
        for key in VOCABULARY_KEYS
    }
    return {
        "format": FORMAT,
        "now": meta["now"],
        "history_days": int(params.get("history_days", 180)),
        "quality_minutes": float(params.get("quality_minutes", 15.0)),
        "image_attributes": dict(catalog.get("image_attributes") or {}),
        "vocabularies": vocabularies,
        "tone_genre": dict(catalog.get("tone_genre") or {}),
    }


def export_world(world_dir: Path, dst: Path) -> dict[str, Any]:
    """Write the world in ``world_dir`` to ``dst`` in the import format (no hidden
    ground truth, no derived feature tables), with a manifest carrying ``now``,
    ``history_days`` and ``quality_minutes`` so that importing it derives the same
    features, and catalog.json's ``image_attributes``, ``vocabularies`` (united with
    the members' values) and ``tone_genre``."""
    world_dir, dst = Path(world_dir), Path(dst)
    meta_path = world_dir / "world.json"
    if not meta_path.is_file():
        raise KeyartError(f"world export: no world in {world_dir} (world.json missing)")
    meta = json.loads(meta_path.read_text())
    catalog = _catalog_meta(world_dir)
    if dst.exists() and any(dst.iterdir()):
        raise KeyartError(f"world export: {dst} is not empty")
    dst.mkdir(parents=True, exist_ok=True)
    sizes: dict[str, int] = {}
    frames: dict[str, pd.DataFrame] = {}
    for spec in TABLES:
        if spec.file == IMAGES.file:
            spec = images_table(catalog.get("image_attributes") or {})
        path = world_dir / spec.file
        if not path.is_file() and spec.optional:
            continue
        if not path.is_file():
            raise KeyartError(f"world export: {path} is missing")
        df = _export_frame(path, spec)
        write_parquet(df, spec, dst / spec.file)
        sizes[spec.file] = len(df)
        frames[spec.file] = df
    manifest = _export_manifest(meta, catalog, frames[MEMBERS.file])
    (dst / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return {"dir": str(dst), "rows": sizes, **{k: manifest[k] for k in ("now", "history_days")}}


__all__ = ["export_world"]
