"""The catalog (titles and their artwork pools) as an in-process cache.

The catalog is small (thousands of titles, tens of images each), changes rarely
(new artwork is published in batches) and is read for every title of every page.
Holding it in memory makes a page of 40 titles cost dictionary lookups instead of
40+ Feast online reads (or one large multi-entity read) per request, keeps the
request latency independent of the online store, and lets the service keep serving
defaults when the store is down. It is reloaded when a new catalog version is built.

Only the public ImageInfo fields (and the image attributes catalog.json declares)
are read from images.parquet: the world's hidden ground-truth `clickbait` column
never reaches the request path.

The vocabularies are open. catalog.json (written by `keyart world import`, format in
keyart.jobs.world.import_schema) declares the customer's image attributes, the
tone -> genre map and declared countries and languages; the country and language
vocabularies are those united with the values of the world's members.parquet, so
a world without catalog.json (the synthetic demo world) has them too. Image columns
an older world file lacks get the import format's defaults (NaN for measures, ""
for categories, `group_size` = `num_faces`, `lineage_id` = `image_id`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq

from keyart.domain import Catalog, CropInfo, ImageInfo, TitleInfo

CROPS_FILE = "image_crops.parquet"
CATALOG_FILE = "catalog.json"
MEMBERS_FILE = "members.parquet"
VOCABULARY_KEYS: tuple[str, ...] = ("country", "language")

# The ImageInfo fields read from images.parquet (`attributes` comes from the declared
# attribute columns instead).
IMAGE_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(ImageInfo) if f.name != "attributes")
TITLE_COLUMNS: tuple[str, ...] = (
    "title_id", "name", "genres", "cast", "villain_actor", "default_image_id", "runtime_minutes",
)
_TUPLE_FIELDS = frozenset({"cast_shown", "theme_tags"})
_INT_FIELDS = frozenset({"num_faces", "group_size"})
_FLOAT_FIELDS = frozenset({"face_area", "brightness", "warmth", "contrast"})
_BOOL_FIELDS = frozenset({"villain_shown", "text_present", "active"})
# The value of a missing column (or a null) of an optional image field.
_IMAGE_DEFAULTS: dict[str, Any] = {
    **{f: math.nan for f in _FLOAT_FIELDS},
    **{f: "" for f in ("expression", "tone", "style", "palette")},
    "villain_shown": False,
    "text_present": False,
    "active": True,
    "cast_shown": (),
    "theme_tags": (),
}
# A missing column that copies another field of the same image.
_IMAGE_COPIES: dict[str, str] = {"lineage_id": "image_id", "group_size": "num_faces"}


def _tuple(v: Any) -> tuple[str, ...]:
    return tuple(str(x) for x in v) if v is not None else ()


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _float(v: Any) -> float:
    """A number; NaN (unknown) for a null or NaN."""
    return math.nan if _missing(v) else float(v)


def _field(name: str, v: Any) -> Any:
    if name in _TUPLE_FIELDS:
        return _tuple(v)
    if name in _FLOAT_FIELDS:
        return _float(v)
    if _missing(v) and name in _IMAGE_DEFAULTS:
        return _IMAGE_DEFAULTS[name]
    if name in _INT_FIELDS:
        return int(v)
    if name in _BOOL_FIELDS:
        return bool(v)
    return str(v)


def _attribute(kind: str, v: Any) -> float | str:
    if kind == "numeric":
        return _float(v)
    return "" if _missing(v) else str(v)


def _image(row: dict[str, Any], attributes: dict[str, str]) -> ImageInfo:
    kw: dict[str, Any] = {}
    for name in IMAGE_FIELDS:
        if name in row:
            kw[name] = _field(name, row[name])
        elif name in _IMAGE_DEFAULTS:
            kw[name] = _IMAGE_DEFAULTS[name]
    for name, source in _IMAGE_COPIES.items():
        if name not in row:
            kw[name] = kw[source]
    kw["attributes"] = {n: _attribute(k, row.get(n)) for n, k in attributes.items()}
    return ImageInfo(**kw)


def _read_catalog_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    raw = json.loads(path.read_text())
    return raw if isinstance(raw, dict) else {}


def _observed_vocabularies(path: Path) -> dict[str, set[str]]:
    """The distinct countries and languages of members.parquet (just those columns)."""
    if not path.is_file():
        return {}
    names = set(pq.read_schema(path).names)
    cols = [c for c in VOCABULARY_KEYS if c in names]
    if not cols:
        return {}
    df = pd.read_parquet(path, columns=cols)
    return {c: {str(v) for v in pd.unique(df[c].dropna())} for c in cols}


def _vocabularies(meta: dict[str, Any], members_path: Path) -> dict[str, tuple[str, ...]]:
    declared = meta.get("vocabularies") or {}
    observed = _observed_vocabularies(members_path)
    return {
        key: tuple(sorted({str(v) for v in declared.get(key, ())} | observed.get(key, set())))
        for key in VOCABULARY_KEYS
    }


def _default_image(pool: list[str], images: dict[str, ImageInfo]) -> str:
    """A title's first active image in id order, else its first image ("" without any)."""
    active = [i for i in pool if images[i].active]
    return (active or pool or [""])[0]


def _title(r: dict[str, Any], pools: dict[str, list[str]], images: dict[str, ImageInfo]) -> TitleInfo:
    tid = str(r["title_id"])
    own = sorted(pools.get(tid, []))
    given = r.get("default_image_id")
    default = str(given) if isinstance(given, str) and given else _default_image(own, images)
    pool = sorted(set(own) | ({default} if default in images else set()))
    villain = r.get("villain_actor")
    name = r.get("name")
    runtime = r.get("runtime_minutes")
    return TitleInfo(
        title_id=tid,
        name=str(name) if isinstance(name, str) else tid,
        genres=_tuple(r.get("genres")),
        cast=_tuple(r.get("cast")),
        default_image_id=default,
        image_ids=tuple(pool),
        villain_actor=str(villain) if isinstance(villain, str) and villain else None,
        runtime_minutes=100.0 if _missing(runtime) else _float(runtime),
    )


def load_catalog(world_dir: Path) -> Catalog:
    """Read titles.parquet, images.parquet (and catalog.json, image_crops.parquet,
    the countries and languages of members.parquet) of a world into a `Catalog`.

    A title's `image_ids` are all its images sorted by id (the choosable pool is
    `Catalog.pool`); its default image, when titles.parquet has none, is its first
    active image. `version` is a content hash of the files and the vocabularies.
    """
    d = Path(world_dir)
    t_path, i_path, c_path = d / "titles.parquet", d / "images.parquet", d / CATALOG_FILE
    meta = _read_catalog_json(c_path)
    attributes = {str(n): str(k) for n, k in (meta.get("image_attributes") or {}).items()}
    tone_genre = {str(t): str(g) for t, g in (meta.get("tone_genre") or {}).items()}
    vocabularies = _vocabularies(meta, d / MEMBERS_FILE)

    available = set(pq.read_schema(i_path).names)
    wanted = [*IMAGE_FIELDS, *(n for n in attributes if n not in IMAGE_FIELDS)]
    img_cols = [c for c in wanted if c in available]  # never `clickbait`
    images_df = pd.read_parquet(i_path, columns=img_cols)
    t_available = set(pq.read_schema(t_path).names)
    titles_df = pd.read_parquet(t_path, columns=[c for c in TITLE_COLUMNS if c in t_available])

    images = {str(r["image_id"]): _image(r, attributes) for r in images_df.to_dict("records")}
    pools: dict[str, list[str]] = {}
    for img in images.values():
        pools.setdefault(img.title_id, []).append(img.image_id)
    titles = {str(r["title_id"]): _title(r, pools, images) for r in titles_df.to_dict("records")}
    crops_path = d / CROPS_FILE
    crops = _crops(crops_path, images) if crops_path.is_file() else {}
    h = hashlib.sha256()
    for p in (t_path, i_path, crops_path, c_path):
        if p.is_file():
            h.update(p.read_bytes())
    h.update(json.dumps(vocabularies, sort_keys=True).encode())  # members.parquet is not hashed
    return Catalog(
        titles=titles,
        images=images,
        version=h.hexdigest()[:12],
        crops=crops,
        vocabularies=vocabularies,
        image_attributes=attributes,
        tone_genre=tone_genre,
    )


def _crops(path: Path, images: dict[str, ImageInfo]) -> dict[str, dict[str, CropInfo]]:
    """image_id -> aspect ratio -> crop, from the artwork analysis table."""
    out: dict[str, dict[str, CropInfo]] = {}
    for r in pd.read_parquet(path).to_dict("records"):
        image_id = str(r["image_id"])
        if image_id not in images:
            continue  # crops of images no longer in the catalog
        out.setdefault(image_id, {})[str(r["aspect_ratio"])] = CropInfo(
            aspect_ratio=str(r["aspect_ratio"]),
            variant_image_id=str(r["variant_image_id"]),
            x=int(r["x"]),
            y=int(r["y"]),
            width=int(r["width"]),
            height=int(r["height"]),
            cuts_face=bool(r["cuts_face"]),
        )
    return out


def catalog_files(world_dir: Path) -> tuple[Path, ...]:
    """The files a catalog is read from (their change means a reload)."""
    d = Path(world_dir)
    return (d / "titles.parquet", d / "images.parquet", d / CROPS_FILE, d / CATALOG_FILE)
