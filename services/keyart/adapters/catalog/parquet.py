"""The catalog (titles and their artwork pools) as an in-process cache.

The catalog is small (thousands of titles, tens of images each), changes rarely
(new artwork is published in batches) and is read for every title of every page.
Holding it in memory makes a page of 40 titles cost dictionary lookups instead of
40+ Feast online reads (or one large multi-entity read) per request, keeps the
request latency independent of the online store, and lets the service keep serving
defaults when the store is down. It is reloaded when a new catalog version is built.

Only the public ImageInfo fields are read from images.parquet: the world's hidden
ground-truth `clickbait` column never reaches the request path.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq

from keyart.domain import Catalog, CropInfo, ImageInfo, TitleInfo

CROPS_FILE = "image_crops.parquet"

IMAGE_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(ImageInfo))
TITLE_COLUMNS: tuple[str, ...] = (
    "title_id", "name", "genres", "cast", "villain_actor", "default_image_id", "runtime_minutes",
)
_TUPLE_FIELDS = frozenset({"cast_shown", "theme_tags"})


def _tuple(v: Any) -> tuple[str, ...]:
    return tuple(str(x) for x in v) if v is not None else ()


def _image(row: dict[str, Any]) -> ImageInfo:
    kw: dict[str, Any] = {}
    for f in dataclasses.fields(ImageInfo):
        if f.name not in row:
            continue  # optional fields (theme_tags, active) keep their defaults
        v = row[f.name]
        if f.name in _TUPLE_FIELDS:
            v = _tuple(v)
        elif f.name in ("num_faces", "group_size"):
            v = int(v)
        elif f.name in ("face_area", "brightness", "warmth", "contrast"):
            v = float(v)
        elif f.name in ("villain_shown", "text_present", "active"):
            v = bool(v)
        else:
            v = str(v)
        kw[f.name] = v
    return ImageInfo(**kw)


def load_catalog(world_dir: Path) -> Catalog:
    """Read titles.parquet and images.parquet of a world into a `Catalog`.

    A title's `image_ids` are all its images sorted by id (the choosable pool is
    `Catalog.pool`). `version` is a content hash of the files.
    """
    d = Path(world_dir)
    t_path, i_path = d / "titles.parquet", d / "images.parquet"
    available = set(pq.read_schema(i_path).names)
    img_cols = [c for c in IMAGE_FIELDS if c in available]  # never `clickbait`
    images_df = pd.read_parquet(i_path, columns=img_cols)
    titles_df = pd.read_parquet(t_path, columns=list(TITLE_COLUMNS))

    images = {r["image_id"]: _image(r) for r in images_df.to_dict("records")}
    pools: dict[str, list[str]] = {}
    for img in images.values():
        pools.setdefault(img.title_id, []).append(img.image_id)
    titles: dict[str, TitleInfo] = {}
    for r in titles_df.to_dict("records"):
        tid = str(r["title_id"])
        default = str(r["default_image_id"])
        pool = sorted(set(pools.get(tid, [])) | ({default} if default in images else set()))
        villain = r["villain_actor"]
        titles[tid] = TitleInfo(
            title_id=tid,
            name=str(r["name"]),
            genres=_tuple(r["genres"]),
            cast=_tuple(r["cast"]),
            default_image_id=default,
            image_ids=tuple(pool),
            villain_actor=str(villain) if isinstance(villain, str) and villain else None,
            runtime_minutes=float(r["runtime_minutes"]),
        )
    crops_path = d / CROPS_FILE
    crops = _crops(crops_path, images) if crops_path.is_file() else {}
    h = hashlib.sha256()
    for p in (t_path, i_path, crops_path):
        if p.is_file():
            h.update(p.read_bytes())
    return Catalog(titles=titles, images=images, version=h.hexdigest()[:12], crops=crops)


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
    return (d / "titles.parquet", d / "images.parquet", d / CROPS_FILE)
