"""Put analysed artwork into the catalog so RankArtwork can serve it at once.

New images join their title's pool with their measured attributes (the scorer
ranks them from attributes alone: no impressions needed) and one crop per aspect
ratio. Serving replicas notice the changed catalog files and reload them.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from keyart.adapters.catalog.parquet import CROPS_FILE
from keyart.errors import KeyartError
from keyart.jobs.artwork.analysis import ArtworkError, ImageAnalysis, analyze_paths, to_image_row
from keyart.jobs.artwork.crops import crop_variants

CROP_COLUMNS = ("image_id", "aspect_ratio", "variant_image_id", "x", "y", "width", "height", "cuts_face")


def _write_atomically(frame: pd.DataFrame, path: Path) -> None:
    tmp = path.with_suffix(".parquet.tmp")
    frame.to_parquet(tmp, index=False)
    tmp.replace(path)


def ingest_artwork(
    paths: list[Path], world_dir: Path, title_id: str, max_side: int = 1600
) -> tuple[list[str], list[ArtworkError]]:
    """Analyse images and add them to title_id's pool; returns (image ids added, per-file errors)."""
    titles = pd.read_parquet(world_dir / "titles.parquet", columns=["title_id"])
    if title_id not in set(titles["title_id"]):
        raise KeyartError(f"{world_dir / 'titles.parquet'}: no title {title_id!r}")
    analyses: list[ImageAnalysis] = []
    errors: list[ArtworkError] = []
    for item in analyze_paths(paths, max_side=max_side):
        (errors if isinstance(item, ArtworkError) else analyses).append(item)  # type: ignore[arg-type]
    if not analyses:
        return [], errors
    rows, crops = [], []
    for a in analyses:
        image_id = f"{title_id}-{Path(a.path).stem}"
        rows.append(to_image_row(a, image_id=image_id, title_id=title_id, lineage_id=image_id))
        for v in crop_variants(a, image_id, image_id):
            crops.append(dict(zip(CROP_COLUMNS, (image_id, v.ratio, v.variant_id, v.crop.x, v.crop.y,
                                                 v.crop.w, v.crop.h, v.crop.cuts_face))))
    added = [r["image_id"] for r in rows]
    images_path = world_dir / "images.parquet"
    images = pd.read_parquet(images_path)
    new_rows = pd.DataFrame(rows)
    for column in images.columns.difference(new_rows.columns):
        new_rows[column] = False if images[column].dtype == bool else None  # e.g. hidden ground truth
    images = pd.concat([images[~images["image_id"].isin(added)], new_rows[images.columns]], ignore_index=True)
    crops_path = world_dir / CROPS_FILE
    old = pd.read_parquet(crops_path) if crops_path.is_file() else pd.DataFrame(columns=list(CROP_COLUMNS))
    crop_frame = pd.concat([old[~old["image_id"].isin(added)], pd.DataFrame(crops)], ignore_index=True)
    _write_atomically(crop_frame, crops_path)  # crops first: a catalog never names an image without them
    _write_atomically(images, images_path)
    return added, errors
