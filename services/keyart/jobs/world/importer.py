"""Bring your own catalog: import (and export) a world as plain Parquet files.

``import_world(src, world_dir)`` validates a directory of Parquet files, then
replaces ``world_dir`` atomically with the imported world and its derived feature
tables; ``export_world(world_dir, dst)`` writes any world (a synthetic one included)
in the same format, so export then import round-trips the catalog and the member
features.

Directory layout (``list<string>`` means a Parquet list of strings; ``float`` accepts
any integer or floating type; ``int`` any integer type; every timestamp must carry a
time zone, e.g. ``timestamp[us, tz=UTC]``):

members.parquet (one row per member)
    member_id       string, required, unique, non-empty
    country         string, required, one of keyart.domain.COUNTRIES
    language        string, required, non-empty (e.g. "en")
    main_device     string, required, one of keyart.domain.DEVICES
    tenure_days     float, required, >= 0 (days since joining, as of ``now``)

titles.parquet (one row per title)
    title_id          string, required, unique, non-empty
    name              string, required
    genres            list<string>, required, non-empty, each one of keyart.domain.GENRES
    cast              list<string>, required (may be empty)
    villain_actor     string, optional, nullable; when set, one of the title's cast
    default_image_id  string, required; an image_id of images.parquet of this title
    runtime_minutes   float, optional (default 100), > 0

images.parquet (one row per artwork image; the keyart.domain.ImageInfo fields)
    image_id       string, required, unique, non-empty
    title_id       string, required, a title_id of titles.parquet
    lineage_id     string, required, non-empty (variants of one source share it)
    num_faces      int, required, >= 0
    face_area      float, required, 0..1 (largest face's share of the frame)
    expression     string, required, one of keyart.domain.EXPRESSIONS
    villain_shown  bool, required
    cast_shown     list<string>, required (may be empty)
    group_size     int, required, >= 0 (people visible)
    brightness     float, required, 0..1
    warmth         float, required, -1..1
    contrast       float, required, 0..1
    tone           string, required, one of keyart.domain.TONES
    style          string, required, one of keyart.domain.STYLES
    palette        string, required, one of keyart.domain.PALETTES
    text_present   bool, required
    theme_tags     list<string>, optional (default empty)
    active         bool, optional (default true; inactive images are never chosen)

viewing.parquet (viewing history, one row per viewing event; may be empty)
    member_id        string, required, a member_id of members.parquet
    title_id         string, required, a title_id of titles.parquet
    event_timestamp  timestamp with time zone, required
    minutes_watched  float, required, >= 0

image_crops.parquet (optional; per-device crops from ``keyart artwork``)
    image_id, aspect_ratio, variant_image_id (string), x, y, width, height (int),
    cuts_face (bool); image_id must be an image of images.parquet

manifest.json (optional)
    {"format": "keyart-world/1", "now": "2026-01-01T00:00:00+00:00",
     "history_days": 180, "quality_minutes": 15.0}
    ``now``: end of the history, tz-aware (default: the last viewing event rounded up
    to the next UTC midnight, or today's midnight without viewing); ``history_days``
    (>= 14): span of the weekly member-feature snapshots; ``quality_minutes``: minutes
    from which a play counts as a quality play (training labels).

Columns not listed are refused (a misspelt optional column would otherwise be
silently replaced by its default); hidden ground truth (``latent_*``, ``clickbait``)
is therefore never imported, and an imported world has none: it cannot simulate
outcomes (``keyart train --bootstrap``); train on a log export instead.

Every problem names the file, the column and the (0-based) row:
``images.parquet, column 'tone', row 17: 'sad' is not allowed (allowed: action, ...)``.

The import is atomic: everything is written and derived in a temporary directory
next to ``world_dir`` and renamed into place; on any failure the temporary
directory is removed and the previous world is untouched. The Feast online store
still holds the previous world's features until ``keyart features apply`` (the
import removes the "materialized" marker so ``keyart up`` re-applies).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from keyart.domain import COUNTRIES, DEVICES, EXPRESSIONS, GENRES, PALETTES, STYLES, TONES
from keyart.errors import KeyartError

FORMAT = "keyart-world/1"
MANIFEST = "manifest.json"
MAX_ISSUES = 20


# ----------------------------------------------------------------------------- schema


@dataclass(frozen=True)
class Column:
    name: str
    kind: str  # string | int | float | bool | list<string> | timestamp
    required: bool = True
    nullable: bool = False
    vocab: tuple[str, ...] | None = None
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    non_empty: bool = False  # strings: not ""; lists: at least one element
    default: Any = None
    unique: bool = False


@dataclass(frozen=True)
class Table:
    file: str
    columns: tuple[Column, ...]
    optional: bool = False

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]


def _id(name: str, unique: bool = False) -> Column:
    return Column(name, "string", non_empty=True, unique=unique)


MEMBERS = Table("members.parquet", (
    _id("member_id", unique=True),
    Column("country", "string", vocab=COUNTRIES),
    Column("language", "string", non_empty=True),
    Column("main_device", "string", vocab=DEVICES),
    Column("tenure_days", "float", lo=0.0),
))
TITLES = Table("titles.parquet", (
    _id("title_id", unique=True),
    Column("name", "string"),
    Column("genres", "list<string>", vocab=GENRES, non_empty=True),
    Column("cast", "list<string>"),
    Column("villain_actor", "string", required=False, nullable=True),
    _id("default_image_id"),
    Column("runtime_minutes", "float", required=False, lo=0.0, lo_open=True, default=100.0),
))
IMAGES = Table("images.parquet", (
    _id("image_id", unique=True),
    _id("title_id"),
    _id("lineage_id"),
    Column("num_faces", "int", lo=0),
    Column("face_area", "float", lo=0.0, hi=1.0),
    Column("expression", "string", vocab=EXPRESSIONS),
    Column("villain_shown", "bool"),
    Column("cast_shown", "list<string>"),
    Column("group_size", "int", lo=0),
    Column("brightness", "float", lo=0.0, hi=1.0),
    Column("warmth", "float", lo=-1.0, hi=1.0),
    Column("contrast", "float", lo=0.0, hi=1.0),
    Column("tone", "string", vocab=TONES),
    Column("style", "string", vocab=STYLES),
    Column("palette", "string", vocab=PALETTES),
    Column("text_present", "bool"),
    Column("theme_tags", "list<string>", required=False, default=()),
    Column("active", "bool", required=False, default=True),
))
VIEWING = Table("viewing.parquet", (
    _id("member_id"),
    _id("title_id"),
    Column("event_timestamp", "timestamp"),
    Column("minutes_watched", "float", lo=0.0),
))
CROPS = Table("image_crops.parquet", (
    _id("image_id"),
    _id("aspect_ratio"),
    _id("variant_image_id"),
    Column("x", "int", lo=0),
    Column("y", "int", lo=0),
    Column("width", "int", lo=1),
    Column("height", "int", lo=1),
    Column("cuts_face", "bool", required=False, default=False),
), optional=True)
TABLES: tuple[Table, ...] = (MEMBERS, TITLES, IMAGES, VIEWING, CROPS)

_ARROW = {
    "string": pa.string(),
    "int": pa.int64(),
    "float": pa.float64(),
    "bool": pa.bool_(),
    "list<string>": pa.list_(pa.string()),
    "timestamp": pa.timestamp("ns", tz="UTC"),
}


def arrow_schema(table: Table) -> pa.Schema:
    """The Arrow schema the importer writes (and the exporter produces)."""
    return pa.schema([pa.field(c.name, _ARROW[c.kind], nullable=c.nullable) for c in table.columns])


# ----------------------------------------------------------------------------- errors


@dataclass(frozen=True)
class Issue:
    file: str
    column: str | None
    row: int | None
    message: str

    def __str__(self) -> str:
        where = self.file
        if self.column is not None:
            where += f", column '{self.column}'"
        if self.row is not None:
            where += f", row {self.row}"
        return f"{where}: {self.message}"


class WorldImportError(KeyartError):
    """The directory is not a valid world; ``issues`` lists every problem found
    (up to MAX_ISSUES), each naming the file, column and row."""

    def __init__(self, issues: list[Issue]) -> None:
        self.issues = list(issues)
        first = str(self.issues[0]) if self.issues else "invalid world"
        more = len(self.issues) - 1
        extra = ""
        if more > 0:
            extra = f" (and {more} more: " + "; ".join(str(i) for i in self.issues[1:4])
            extra += "; ..." if more > 3 else ""
            extra += ")"
        super().__init__(f"world import: {first}{extra}")

    @property
    def first(self) -> Issue:
        return self.issues[0]


class _Issues:
    def __init__(self) -> None:
        self.items: list[Issue] = []

    def add(self, file: str, column: str | None, row: int | None, message: str) -> None:
        if len(self.items) < MAX_ISSUES:
            self.items.append(Issue(file, column, row, message))

    def __bool__(self) -> bool:
        return bool(self.items)


# ----------------------------------------------------------------------------- validation


def _short(v: Any) -> str:
    text = repr(v.tolist() if hasattr(v, "tolist") and not isinstance(v, str) else v)
    return text if len(text) <= 60 else text[:57] + "..."


def _type_ok(kind: str, t: pa.DataType) -> bool:
    if pa.types.is_dictionary(t):
        t = t.value_type
    if kind == "string":
        return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_null(t)
    if kind == "int":
        return pa.types.is_integer(t) or pa.types.is_null(t)
    if kind == "float":
        return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_null(t)
    if kind == "bool":
        return pa.types.is_boolean(t) or pa.types.is_null(t)
    if kind == "list<string>":
        if not (pa.types.is_list(t) or pa.types.is_large_list(t)):
            return False
        v = t.value_type
        return pa.types.is_string(v) or pa.types.is_large_string(v) or pa.types.is_null(v)
    if kind == "timestamp":
        return pa.types.is_timestamp(t)
    raise AssertionError(kind)  # pragma: no cover


def _first_true(mask: np.ndarray) -> int | None:
    idx = np.flatnonzero(mask)
    return int(idx[0]) if len(idx) else None


def _read_table(path: Path, spec: Table, issues: _Issues) -> pd.DataFrame | None:
    """Read and type-check one file; None if it cannot be used further."""
    f = spec.file
    try:
        table = pq.read_table(path)
    except Exception as exc:  # noqa: BLE001 - not parquet, truncated, ...
        issues.add(f, None, None, f"cannot read as Parquet: {' '.join(str(exc).split())[:200]}")
        return None
    names = table.schema.names
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        issues.add(f, dup[0], None, "column appears more than once")
        return None
    known = {c.name for c in spec.columns}
    for name in names:
        if name not in known:
            hint = " (hidden ground truth is never imported)" if (
                name.startswith("latent_") or name == "clickbait") else ""
            issues.add(f, name, None, f"unknown column{hint}; expected columns: {', '.join(spec.names)}")
    ok = True
    for col in spec.columns:
        if col.name not in names:
            if col.required:
                issues.add(f, col.name, None, "required column is missing")
                ok = False
            continue
        arrow_col = table.column(col.name)
        if not _type_ok(col.kind, arrow_col.type):
            values = arrow_col.to_pylist()
            row = next((i for i, v in enumerate(values) if v is not None), None)
            got = f"{arrow_col.type}" + (f" ({_short(values[row])})" if row is not None else "")
            issues.add(f, col.name, row, f"expected {col.kind}, got {got}")
            ok = False
        elif col.kind == "timestamp" and arrow_col.type.tz is None:
            row = _first_true(~np.asarray(arrow_col.is_null().to_pylist(), dtype=bool))
            issues.add(
                f, col.name, 0 if row is None else row,
                f"timestamps must be timezone-aware (got {arrow_col.type} without a time zone; "
                "store UTC as timestamp[us, tz=UTC])",
            )
            ok = False
    if not ok or issues:
        return None
    df = table.to_pandas()
    for col in spec.columns:
        if col.name not in df.columns:
            df[col.name] = [list(col.default) if isinstance(col.default, tuple) else col.default] * len(df) \
                if col.kind == "list<string>" else col.default
        elif col.kind == "list<string>":
            df[col.name] = [None if v is None else [str(x) for x in v] for v in df[col.name]]
        elif col.kind == "timestamp":
            df[col.name] = pd.to_datetime(df[col.name], utc=True).dt.as_unit("ns")
    return df[spec.names]


def _check_values(df: pd.DataFrame, spec: Table, issues: _Issues) -> None:
    f = spec.file
    for col in spec.columns:
        s = df[col.name]
        nulls = s.isna().to_numpy() if col.kind != "list<string>" else np.array(
            [v is None for v in s], dtype=bool)
        if not col.nullable:
            row = _first_true(nulls)
            if row is not None:
                issues.add(f, col.name, row, "missing value (null) in a required column")
                continue
        present = ~nulls
        if col.kind == "string":
            vals = s.to_numpy(dtype=object)
            if col.non_empty:
                row = _first_true(present & np.array([v == "" or (isinstance(v, str) and not v.strip())
                                                      for v in vals], dtype=bool))
                if row is not None:
                    issues.add(f, col.name, row, "empty string")
                    continue
            if col.vocab is not None:
                allowed = set(col.vocab)
                bad = present & ~np.isin(vals.astype(str), list(allowed))
                row = _first_true(bad)
                if row is not None:
                    issues.add(f, col.name, row,
                               f"{vals[row]!r} is not allowed (allowed: {', '.join(col.vocab)})")
                    continue
        elif col.kind == "list<string>":
            if col.non_empty:
                row = _first_true(present & np.array([v is not None and len(v) == 0 for v in s], dtype=bool))
                if row is not None:
                    issues.add(f, col.name, row, "empty list; at least one value is required")
                    continue
            if col.vocab is not None:
                allowed = set(col.vocab)
                for i, v in enumerate(s):
                    bad = [x for x in (v or ()) if x not in allowed]
                    if bad:
                        issues.add(f, col.name, i,
                                   f"{bad[0]!r} is not allowed (allowed: {', '.join(col.vocab)})")
                        break
        elif col.kind in ("int", "float"):
            vals = s.to_numpy(dtype=float, na_value=np.nan)
            row = _first_true(present & ~np.isfinite(vals))
            if row is not None:
                issues.add(f, col.name, row, f"{vals[row]} is not a finite number")
                continue
            if col.lo is not None:
                bad = present & ((vals <= col.lo) if col.lo_open else (vals < col.lo))
                row = _first_true(bad)
                if row is not None:
                    op = ">" if col.lo_open else ">="
                    issues.add(f, col.name, row, f"{vals[row]:g} is out of range (must be {op} {col.lo:g})")
                    continue
            if col.hi is not None:
                row = _first_true(present & (vals > col.hi))
                if row is not None:
                    issues.add(f, col.name, row, f"{vals[row]:g} is out of range (must be <= {col.hi:g})")
                    continue
        if col.unique:
            dup = s.duplicated(keep="first").to_numpy()
            row = _first_true(dup)
            if row is not None:
                first = int(np.flatnonzero((s == s.iloc[row]).to_numpy())[0])
                issues.add(f, col.name, row, f"duplicate id {s.iloc[row]!r} (first at row {first})")


def _check_references(t: dict[str, pd.DataFrame], issues: _Issues) -> None:
    members, titles, images, viewing = t["members"], t["titles"], t["images"], t["viewing"]
    title_ids = pd.Index(titles["title_id"])
    member_ids = pd.Index(members["member_id"])

    def dangling(df: pd.DataFrame, col: str, known: pd.Index, file: str, what: str) -> None:
        bad = ~df[col].isin(known).to_numpy()
        row = _first_true(bad)
        if row is not None:
            issues.add(file, col, row, f"{df[col].iloc[row]!r} is not a known {what}")

    dangling(images, "title_id", title_ids, IMAGES.file, "title_id of titles.parquet")
    dangling(viewing, "member_id", member_ids, VIEWING.file, "member_id of members.parquet")
    dangling(viewing, "title_id", title_ids, VIEWING.file, "title_id of titles.parquet")
    image_title = dict(zip(images["image_id"], images["title_id"]))
    for i, (tid, default) in enumerate(zip(titles["title_id"], titles["default_image_id"])):
        owner = image_title.get(default)
        if owner is None:
            issues.add(TITLES.file, "default_image_id", i,
                       f"{default!r} is not an image_id of images.parquet")
            break
        if owner != tid:
            issues.add(TITLES.file, "default_image_id", i,
                       f"{default!r} belongs to title {owner!r}, not to {tid!r}")
            break
    for i, (villain, cast) in enumerate(zip(titles["villain_actor"], titles["cast"])):
        if isinstance(villain, str) and villain and villain not in cast:
            issues.add(TITLES.file, "villain_actor", i, f"{villain!r} is not in the title's cast")
            break
    if "crops" in t:
        dangling(t["crops"], "image_id", pd.Index(images["image_id"]), CROPS.file,
                 "image_id of images.parquet")
        dup = t["crops"].duplicated(["image_id", "aspect_ratio"]).to_numpy()
        row = _first_true(dup)
        if row is not None:
            issues.add(CROPS.file, "aspect_ratio", row, "duplicate (image_id, aspect_ratio)")


@dataclass
class Manifest:
    now: datetime | None = None
    history_days: int | None = None
    quality_minutes: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _read_manifest(src: Path, issues: _Issues) -> Manifest:
    path = src / MANIFEST
    if not path.is_file():
        return Manifest()
    try:
        raw = json.loads(path.read_text())
        if not isinstance(raw, dict):
            raise TypeError("not a JSON object")
    except Exception as exc:  # noqa: BLE001
        issues.add(MANIFEST, None, None, f"cannot read: {exc}")
        return Manifest()
    m = Manifest()
    fmt = raw.get("format", FORMAT)
    if fmt != FORMAT:
        issues.add(MANIFEST, "format", None, f"{fmt!r} is not supported (expected {FORMAT!r})")
    unknown = set(raw) - {"format", "now", "history_days", "quality_minutes", "source"}
    for k in sorted(unknown):
        issues.add(MANIFEST, k, None, "unknown key (expected format, now, history_days, quality_minutes)")
    if "now" in raw:
        try:
            now = datetime.fromisoformat(str(raw["now"]))
        except ValueError:
            issues.add(MANIFEST, "now", None, f"{raw['now']!r} is not an ISO-8601 timestamp")
        else:
            if now.tzinfo is None:
                issues.add(MANIFEST, "now", None, f"{raw['now']!r} must be timezone-aware (e.g. +00:00)")
            else:
                m.now = now.astimezone(UTC)
    if "history_days" in raw:
        v = raw["history_days"]
        if not isinstance(v, int) or isinstance(v, bool) or v < 14:
            issues.add(MANIFEST, "history_days", None, f"{v!r} must be an integer >= 14")
        else:
            m.history_days = v
    if "quality_minutes" in raw:
        v = raw["quality_minutes"]
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not v > 0:
            issues.add(MANIFEST, "quality_minutes", None, f"{v!r} must be a number > 0")
        else:
            m.quality_minutes = float(v)
    return m


def validate_world_dir(src: Path) -> tuple[dict[str, pd.DataFrame], Manifest]:
    """Read and validate every file of ``src``; raise WorldImportError listing the
    problems. Returns the normalized tables (members, titles, images, viewing and,
    when present, crops) and the manifest."""
    src = Path(src)
    if not src.is_dir():
        raise WorldImportError([Issue(str(src), None, None, "not a directory")])
    issues = _Issues()
    manifest = _read_manifest(src, issues)
    keys = {"members.parquet": "members", "titles.parquet": "titles", "images.parquet": "images",
            "viewing.parquet": "viewing", "image_crops.parquet": "crops"}
    tables: dict[str, pd.DataFrame] = {}
    for spec in TABLES:
        path = src / spec.file
        if not path.is_file():
            if not spec.optional:
                issues.add(spec.file, None, None, f"required file is missing in {src}")
            continue
        before = len(issues.items)
        df = _read_table(path, spec, issues)
        if df is not None and len(issues.items) == before:
            _check_values(df, spec, issues)
            tables[keys[spec.file]] = df
    if not issues:
        _check_references(tables, issues)
    if issues:
        raise WorldImportError(issues.items)
    return tables, manifest


# ----------------------------------------------------------------------------- import


def _default_now(viewing: pd.DataFrame) -> datetime:
    if len(viewing):
        last = pd.Timestamp(viewing["event_timestamp"].max()).tz_convert("UTC")
        day = last.normalize()
        return (day if day == last else day + pd.Timedelta(days=1)).to_pydatetime()
    return datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def _write(df: pd.DataFrame, spec: Table, path: Path) -> None:
    out = df[spec.names].copy()
    for col in spec.columns:
        if col.kind == "list<string>":
            out[col.name] = [list(v) if v is not None else [] for v in out[col.name]]
        elif col.kind == "string" and col.nullable:
            out[col.name] = out[col.name].astype(object).where(out[col.name].notna(), None)
    table = pa.Table.from_pandas(out, schema=arrow_schema(spec), preserve_index=False)
    pq.write_table(table, path)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:  # pragma: no cover
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
    from keyart.jobs.world.params import WorldParams

    src, world_dir = Path(src), Path(world_dir)
    tables, manifest = validate_world_dir(src)
    if now is not None and now.tzinfo is None:
        raise WorldImportError([Issue("--now", None, None, "must be timezone-aware")])
    end = (now.astimezone(UTC) if now is not None else None) or manifest.now or _default_now(tables["viewing"])
    params = WorldParams.model_validate(
        {k: v for k, v in (("history_days", manifest.history_days),
                           ("quality_minutes", manifest.quality_minutes)) if v is not None}
    )
    world_dir.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(4)
    staging = world_dir.parent / f".{world_dir.name}-import-{token}"
    staging.mkdir()
    try:
        for spec, key in ((MEMBERS, "members"), (TITLES, "titles"), (IMAGES, "images"),
                          (VIEWING, "viewing"), (CROPS, "crops")):
            if key in tables:
                _write(tables[key], spec, staging / spec.file)
        viewing = tables["viewing"]
        later = int((viewing["event_timestamp"] > pd.Timestamp(end)).sum()) if len(viewing) else 0
        meta = {
            "seed": 0,
            "imported": True,
            "source": str(src.resolve()),
            "imported_at": datetime.now(UTC).isoformat(),
            "sizes": {
                "members": len(tables["members"]),
                "titles": len(tables["titles"]),
                "images": len(tables["images"]),
                "actors": len({a for c in tables["titles"]["cast"] for a in c}),
                "viewing_events": len(viewing),
            },
            "params": params.model_dump(mode="json"),
            "now": end.isoformat(),
        }
        (staging / "world.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
        (derive or build_features)(staging)
        for p in staging.iterdir():
            with open(p, "rb") as fh:
                os.fsync(fh.fileno())
        _fsync_dir(staging)
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


# ----------------------------------------------------------------------------- export


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
        if not path.is_file():
            if spec.optional:
                continue
            raise KeyartError(f"world export: {path} is missing")
        df = pd.read_parquet(path)
        for col in spec.columns:
            if col.name not in df.columns:
                df[col.name] = [list(col.default or ())] * len(df) if col.kind == "list<string>" \
                    else col.default
            elif col.kind == "timestamp":
                df[col.name] = pd.to_datetime(df[col.name], utc=True).dt.as_unit("ns")
            elif col.kind == "list<string>":
                df[col.name] = [[str(x) for x in v] if v is not None else [] for v in df[col.name]]
        _write(df, spec, dst / spec.file)
        sizes[spec.file] = len(df)
    params = meta.get("params", {})
    manifest = {
        "format": FORMAT,
        "now": meta["now"],
        "history_days": int(params.get("history_days", 180)),
        "quality_minutes": float(params.get("quality_minutes", 15.0)),
    }
    (dst / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return {"dir": str(dst), "rows": sizes, **{k: manifest[k] for k in ("now", "history_days")}}


__all__ = [
    "TABLES",
    "Issue",
    "WorldImportError",
    "arrow_schema",
    "export_world",
    "import_world",
    "validate_world_dir",
]

