"""The world import/export format: which files, which columns, which types.

This module exists so that the format is declared once, as data, and read by
both directions: the validator (keyart.jobs.world.import_validate) checks files
against these declarations, the atomic install (keyart.jobs.world.import_swap)
and the exporter (keyart.jobs.world.export) write files with them.

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

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from keyart.domain import COUNTRIES, DEVICES, EXPRESSIONS, GENRES, PALETTES, STYLES, TONES

FORMAT = "keyart-world/1"
MANIFEST = "manifest.json"


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

# The key of each file in the dict of validated tables.
TABLE_KEYS: dict[str, str] = {
    MEMBERS.file: "members",
    TITLES.file: "titles",
    IMAGES.file: "images",
    VIEWING.file: "viewing",
    CROPS.file: "crops",
}

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


def write_parquet(df: pd.DataFrame, spec: Table, path: Path) -> None:
    """Write the columns of ``spec`` from ``df`` to ``path`` with ``arrow_schema(spec)``
    (null lists become empty lists, missing nullable strings become nulls)."""
    out = df[spec.names].copy()
    for col in spec.columns:
        if col.kind == "list<string>":
            out[col.name] = [list(v) if v is not None else [] for v in out[col.name]]
        elif col.kind == "string" and col.nullable:
            out[col.name] = out[col.name].astype(object).where(out[col.name].notna(), None)
    table = pa.Table.from_pandas(out, schema=arrow_schema(spec), preserve_index=False)
    pq.write_table(table, path)


__all__ = [
    "CROPS",
    "FORMAT",
    "IMAGES",
    "MANIFEST",
    "MEMBERS",
    "TABLES",
    "TABLE_KEYS",
    "TITLES",
    "VIEWING",
    "Column",
    "Table",
    "arrow_schema",
    "write_parquet",
]
