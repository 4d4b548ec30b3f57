"""The world import/export format: which files, which columns, which types.

This module exists so that the format is declared once, as data, and read by
both directions: the validator (keyart.jobs.world.import_validate) checks files
against these declarations, the atomic install (keyart.jobs.world.import_swap)
and the exporter (keyart.jobs.world.export) write files with them. Its docstring
is the format's reference.

``import_world(src, world_dir)`` validates a directory of Parquet files, then
replaces ``world_dir`` atomically with the imported world and its derived feature
tables; ``export_world(world_dir, dst)`` writes any world (a synthetic one included)
in the same format, so export then import round-trips the catalog, the member
features, the image attributes and the vocabularies.

Vocabularies are open: the only closed one is ``main_device`` (keyart.domain.DEVICES,
the API's devices). The value rules of the other categorical columns:

- country: an ISO 3166-1 alpha-2 code (as known to ``pycountry``), uppercase, e.g. "NZ"
- language: a BCP-47-like tag matching ``^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*$``,
  e.g. "en", "pt-BR", "zh-Hant-TW" (no surrounding whitespace or newline)
- label (genres, tone, expression, style, palette, categorical image attributes):
  any string of at most 64 characters without control characters and without
  leading or trailing whitespace; a genre is non-empty, for the image columns ""
  means unknown. Values are kept as given (no case folding).

Directory layout (``list<string>`` means a Parquet list of strings; ``float`` accepts
any integer or floating type; ``int`` any integer type; every timestamp must carry a
time zone, e.g. ``timestamp[us, tz=UTC]``). An optional column may be left out and
then takes the default given; "nullable" means a null is allowed in the column and
means the same as its default:

members.parquet (one row per member)
    member_id       string, required, unique, non-empty
    country         string, required, an ISO 3166-1 alpha-2 code (see above)
    language        string, required, a language tag (see above)
    main_device     string, required, one of keyart.domain.DEVICES
    tenure_days     float, optional, nullable, >= 0 (days since joining, as of ``now``);
                    default NaN (unknown)

titles.parquet (one row per title)
    title_id          string, required, unique, non-empty
    name              string, optional; default the title_id
    genres            list<string>, required, non-empty, each a non-empty label
    cast              list<string>, required (may be empty)
    villain_actor     string, optional, nullable; when set, one of the title's cast
    default_image_id  string, optional; an image_id of images.parquet of this title;
                      default the title's first active image in image_id order (its
                      first image when none is active); a title without any image is
                      an error either way
    runtime_minutes   float, optional (default 100), > 0

images.parquet (one row per artwork image; the keyart.domain.ImageInfo fields)
    image_id       string, required, unique, non-empty
    title_id       string, required, a title_id of titles.parquet
    lineage_id     string, optional, non-empty (variants of one source share it);
                   default the image_id
    num_faces      int, required, >= 0
    face_area      float, optional, nullable, 0..1 (largest face's share of the frame);
                   default NaN (unknown)
    expression     string, optional, nullable, a label; default "" (unknown)
    villain_shown  bool, optional; default false
    cast_shown     list<string>, optional (may be empty); default empty
    group_size     int, optional, >= 0 (people visible); default num_faces
    brightness     float, optional, nullable, 0..1; default NaN (unknown)
    warmth         float, optional, nullable, -1..1; default NaN (unknown)
    contrast       float, optional, nullable, 0..1; default NaN (unknown)
    tone           string, optional, nullable, a label: the genre feel the image conveys,
                   matched to the member's genre taste (a genre name, or mapped to one by
                   the manifest's ``tone_genre``); default "" (unknown)
    style          string, optional, nullable, a label; default "" (unknown)
    palette        string, optional, nullable, a label; default "" (unknown)
    text_present   bool, optional; default false
    theme_tags     list<string>, optional; default empty
    active         bool, optional; default true (inactive images are never chosen)
    <attribute>    the customer's own image attributes declared in the manifest's
                   ``image_attributes``, each required once declared: numeric = int or
                   float, nullable (null: NaN, unknown), finite; categorical = string,
                   nullable (null: "", unknown), a label

viewing.parquet (viewing history, one row per viewing event; may be empty)
    member_id        string, required, a member_id of members.parquet
    title_id         string, required, a title_id of titles.parquet
    event_timestamp  timestamp with time zone, required
    minutes_watched  float, required, >= 0

image_crops.parquet (optional; per-device crops from ``keyart artwork``)
    image_id, aspect_ratio, variant_image_id (string), x, y, width, height (int),
    cuts_face (bool, default false); image_id must be an image of images.parquet

manifest.json (optional; every key optional)
    {"format": "keyart-world/1", "now": "2026-01-01T00:00:00+00:00",
     "history_days": 180, "quality_minutes": 15.0,
     "image_attributes": {"saliency": "numeric", "shot_type": "categorical"},
     "vocabularies": {"country": ["NZ", "AU"], "language": ["mi", "en-NZ"]},
     "tone_genre": {"romantic": "romance"}}
    ``now``: end of the history, tz-aware (default: the last viewing event rounded up
    to the next UTC midnight, or today's midnight without viewing); ``history_days``
    (>= 14): span of the weekly member-feature snapshots; ``quality_minutes``: minutes
    from which a play counts as a quality play (training labels).
    ``image_attributes``: name -> "numeric" | "categorical", the customer's own image
    attributes (e.g. from their computer-vision tagger), columns of images.parquet;
    a name matches ``^[a-z][a-z0-9_]{0,39}$`` and is not a column of images.parquet
    above (nor ``attributes``, ``clickbait``, ``latent_*``).
    ``vocabularies``: values the catalog knows beyond the ones observed in
    members.parquet (keys "country" and "language" only; each value follows its
    column's rule).
    ``tone_genre``: tone -> genre, for tones that are not genre names; the genre must
    be a genre of titles.parquet.

The imported world holds, next to the Parquet files, ``catalog.json``:
    {"image_attributes": {...}, "vocabularies": {"country": [...], "language": [...]},
     "tone_genre": {...}}
where each vocabulary is the sorted union of the members' values and the declared
ones; the catalog loader (keyart.adapters.catalog.parquet) reads it.

Columns not listed (nor declared attributes) are refused: a misspelt optional column
would otherwise be silently replaced by its default; hidden ground truth
(``latent_*``, ``clickbait``) is therefore never imported, and an imported world has
none: it cannot simulate outcomes (``keyart train --bootstrap``); train on a log
export instead.

Every problem names the file, the column (the key for manifest.json, dotted for a
nested entry) and the (0-based) row:
``members.parquet, column 'country', row 17: 'XX' is not an ISO 3166-1 alpha-2 country code``.
The first 20 problems of each file are listed, the rest counted.

The import is atomic: everything is written and derived in a temporary directory
next to ``world_dir`` and renamed into place; on any failure the temporary
directory is removed and the previous world is untouched. The Feast online store
still holds the previous world's features until ``keyart features apply`` (the
import removes the "materialized" marker so ``keyart up`` re-applies).
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pycountry

from keyart.adapters.catalog.parquet import CATALOG_FILE
from keyart.core.feature_space import ATTRIBUTE_KINDS
from keyart.domain import DEVICES

FORMAT = "keyart-world/1"
MANIFEST = "manifest.json"
CATALOG = CATALOG_FILE  # catalog.json of an installed world

# ----------------------------------------------------------------------------- value rules

LABEL_MAX = 64
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_LANGUAGE = re.compile(r"[A-Za-z]{2,3}(?:-[A-Za-z0-9]{1,8})*")
ATTRIBUTE_NAME = re.compile(r"[a-z][a-z0-9_]{0,39}")
VOCABULARY_KEYS: tuple[str, ...] = ("country", "language")


def _show(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


@functools.cache
def _alpha2() -> frozenset[str]:
    return frozenset(str(c.alpha_2) for c in pycountry.countries)


def country_problem(v: Any) -> str | None:
    """Why ``v`` is not an ISO 3166-1 alpha-2 country code (None when it is one)."""
    if not isinstance(v, str):
        return f"{_show(v)} is not a string"
    if v in _alpha2():
        return None
    if v.upper() in _alpha2():
        return f"{_show(v)} must be uppercase ({v.upper()!r})"
    return f"{_show(v)} is not an ISO 3166-1 alpha-2 country code (e.g. 'NZ')"


def language_problem(v: Any) -> str | None:
    """Why ``v`` is not a language tag like "en", "pt-BR" (None when it is one)."""
    if not isinstance(v, str):
        return f"{_show(v)} is not a string"
    if _LANGUAGE.fullmatch(v):
        return None
    return f"{_show(v)} is not a language tag (e.g. 'en', 'pt-BR', 'zh-Hant-TW')"


def label_problem(v: Any, *, allow_empty: bool = False) -> str | None:
    """Why ``v`` is not a label (a genre, tone, ... value); None when it is one."""
    if not isinstance(v, str):
        return f"{_show(v)} is not a string"
    if v == "":
        return None if allow_empty else "empty string"
    if len(v) > LABEL_MAX:
        return f"{_show(v)} is longer than {LABEL_MAX} characters"
    if _CONTROL.search(v):
        return f"{_show(v)} contains a control character"
    if v != v.strip():
        return f"{_show(v)} has leading or trailing whitespace"
    return None


VALUE_RULES: dict[str, Callable[[Any, bool], str | None]] = {
    "country": lambda v, allow_empty: country_problem(v),
    "language": lambda v, allow_empty: language_problem(v),
    "label": lambda v, allow_empty: label_problem(v, allow_empty=allow_empty),
}


def value_problem(rule: str, v: Any, *, allow_empty: bool = False) -> str | None:
    """Why ``v`` breaks ``rule`` ("country", "language" or "label"); None when it does not."""
    return VALUE_RULES[rule](v, allow_empty)


# ----------------------------------------------------------------------------- tables


@dataclass(frozen=True)
class Column:
    name: str
    kind: str  # string | int | float | bool | list<string> | timestamp
    required: bool = True
    nullable: bool = False  # a null means the default (None: stays null)
    vocab: tuple[str, ...] | None = None  # a closed vocabulary (main_device only)
    rule: str | None = None  # value rule: country | language | label (each element of a list)
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    non_empty: bool = False  # strings: not ""; lists: at least one element
    default: Any = None
    default_from: str | None = None  # when absent: a copy of this column of the same row
    unique: bool = False


@dataclass(frozen=True)
class Table:
    file: str
    columns: tuple[Column, ...]
    optional: bool = False

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def extended(self, columns: tuple[Column, ...]) -> Table:
        """This table with ``columns`` after its own (the declared image attributes)."""
        return replace(self, columns=self.columns + columns) if columns else self


def _id(name: str, unique: bool = False) -> Column:
    return Column(name, "string", non_empty=True, unique=unique)


def _label(name: str) -> Column:
    """An open categorical image column: optional, nullable, "" (unknown) by default."""
    return Column(name, "string", required=False, nullable=True, rule="label", default="")


def _measure(name: str, lo: float, hi: float) -> Column:
    """An image measure: optional, nullable, NaN (unknown) by default."""
    return Column(name, "float", required=False, nullable=True, lo=lo, hi=hi, default=math.nan)


MEMBERS = Table("members.parquet", (
    _id("member_id", unique=True),
    Column("country", "string", rule="country"),
    Column("language", "string", rule="language"),
    Column("main_device", "string", vocab=DEVICES),
    Column("tenure_days", "float", required=False, nullable=True, lo=0.0, default=math.nan),
))
TITLES = Table("titles.parquet", (
    _id("title_id", unique=True),
    Column("name", "string", required=False, default_from="title_id"),
    Column("genres", "list<string>", rule="label", non_empty=True),
    Column("cast", "list<string>"),
    Column("villain_actor", "string", required=False, nullable=True),
    # When absent: the title's first active image (import_validate, it needs images.parquet).
    Column("default_image_id", "string", required=False, non_empty=True),
    Column("runtime_minutes", "float", required=False, lo=0.0, lo_open=True, default=100.0),
))
IMAGES = Table("images.parquet", (
    _id("image_id", unique=True),
    _id("title_id"),
    Column("lineage_id", "string", required=False, non_empty=True, default_from="image_id"),
    Column("num_faces", "int", lo=0),
    _measure("face_area", 0.0, 1.0),
    _label("expression"),
    Column("villain_shown", "bool", required=False, default=False),
    Column("cast_shown", "list<string>", required=False, default=()),
    Column("group_size", "int", required=False, lo=0, default_from="num_faces"),
    _measure("brightness", 0.0, 1.0),
    _measure("warmth", -1.0, 1.0),
    _measure("contrast", 0.0, 1.0),
    _label("tone"),
    _label("style"),
    _label("palette"),
    Column("text_present", "bool", required=False, default=False),
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


def attribute_name_problem(name: Any) -> str | None:
    """Why ``name`` cannot name an image attribute (None when it can)."""
    if not isinstance(name, str) or not ATTRIBUTE_NAME.fullmatch(name):
        return f"{_show(name)} is not an attribute name (^[a-z][a-z0-9_]{{0,39}}$)"
    if name in IMAGES.names or name in ("attributes", "clickbait") or name.startswith("latent_"):
        return f"{name!r} is a column of images.parquet already (or reserved)"
    return None


def attribute_column(name: str, kind: str) -> Column:
    """The images.parquet column of a declared attribute (numeric or categorical)."""
    if kind == "numeric":
        return Column(name, "float", nullable=True, default=math.nan)
    return Column(name, "string", nullable=True, rule="label", default="")


def images_table(image_attributes: Mapping[str, str]) -> Table:
    """images.parquet with the declared attribute columns after the fixed ones (in the
    order declared)."""
    return IMAGES.extended(tuple(attribute_column(n, k) for n, k in image_attributes.items()))


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
    (null lists become empty lists, null strings of a nullable column its default, or
    null when it has none; NaN floats are written as nulls)."""
    out = df[spec.names].copy()
    for col in spec.columns:
        if col.kind == "list<string>":
            out[col.name] = [list(v) if v is not None else [] for v in out[col.name]]
        elif col.kind == "string" and col.nullable:
            fill = col.default
            out[col.name] = out[col.name].astype(object).where(out[col.name].notna(), fill)
    table = pa.Table.from_pandas(out, schema=arrow_schema(spec), preserve_index=False)
    pq.write_table(table, path)


__all__ = [
    "ATTRIBUTE_KINDS",
    "CATALOG",
    "CROPS",
    "FORMAT",
    "IMAGES",
    "LABEL_MAX",
    "MANIFEST",
    "MEMBERS",
    "TABLES",
    "TABLE_KEYS",
    "TITLES",
    "VIEWING",
    "VOCABULARY_KEYS",
    "Column",
    "Table",
    "arrow_schema",
    "attribute_column",
    "attribute_name_problem",
    "country_problem",
    "images_table",
    "label_problem",
    "language_problem",
    "value_problem",
    "write_parquet",
]
