"""Export a world (synthetic or imported) in the import format: ``export_world``.

This module exists because export is the inverse of import and needs only the
format (keyart.jobs.world.import_schema), not the validator or the atomic install:
it writes the declared columns of each file, never the hidden ground truth nor
the derived feature tables, so that export then import round-trips the catalog
and the member features.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from keyart.errors import KeyartError
from keyart.jobs.world.import_schema import FORMAT, MANIFEST, TABLES, Column, Table, write_parquet


def _export_column(df: pd.DataFrame, col: Column) -> Any:
    """Column ``col`` of ``df`` as exported: its default when absent, timestamps in UTC
    nanoseconds, lists of strings (a null list becomes empty)."""
    if col.name not in df.columns:
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


def _export_manifest(meta: dict[str, Any]) -> dict[str, Any]:
    params = meta.get("params", {})
    return {
        "format": FORMAT,
        "now": meta["now"],
        "history_days": int(params.get("history_days", 180)),
        "quality_minutes": float(params.get("quality_minutes", 15.0)),
    }


def export_world(world_dir: Path, dst: Path) -> dict[str, Any]:
    """Write the world in ``world_dir`` to ``dst`` in the import format (no hidden
    ground truth, no derived feature tables), with a manifest carrying ``now``,
    ``history_days`` and ``quality_minutes`` so that importing it derives the same
    features."""
    world_dir, dst = Path(world_dir), Path(dst)
    meta_path = world_dir / "world.json"
    if not meta_path.is_file():
        raise KeyartError(f"world export: no world in {world_dir} (world.json missing)")
    meta = json.loads(meta_path.read_text())
    if dst.exists() and any(dst.iterdir()):
        raise KeyartError(f"world export: {dst} is not empty")
    dst.mkdir(parents=True, exist_ok=True)
    sizes: dict[str, int] = {}
    for spec in TABLES:
        path = world_dir / spec.file
        if not path.is_file() and spec.optional:
            continue
        if not path.is_file():
            raise KeyartError(f"world export: {path} is missing")
        df = _export_frame(path, spec)
        write_parquet(df, spec, dst / spec.file)
        sizes[spec.file] = len(df)
    manifest = _export_manifest(meta)
    (dst / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return {"dir": str(dst), "rows": sizes, **{k: manifest[k] for k in ("now", "history_days")}}


__all__ = ["export_world"]
