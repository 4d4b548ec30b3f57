"""Measure one artwork image: faces, focal point, colour, text.

This module is the pipeline and its public API (``ImageAnalysis``, ``analyze_image``,
``analyze_paths``, ``to_image_row``); each step lives in its own module
(``decode``, ``faces``, ``saliency``, ``colour``, ``text``).

Everything here runs on a CPU with detectors that ship inside installed wheels
(OpenCV's Haar cascades in ``cv2/data``); nothing is downloaded at run time.

Pipeline for one file (``analyze_image``):

1. Read the header with Pillow (size, format) without decoding pixels.
2. Decode at reduced size where the codec allows it: JPEG uses Pillow ``draft``
   (libjpeg DCT scaling 1/2, 1/4, 1/8), so a 12000x8000 JPEG is never decoded at
   full size. PNG and WebP have no reduced decode in Pillow/OpenCV, so they are
   decoded fully and downscaled right away (peak memory = width*height*4 bytes);
   above ``max_full_decode_pixels`` they are refused with an ``ArtworkError``
   instead of exhausting memory.
3. Downscale to at most ``max_side`` pixels (the working image); every detector
   works on a further reduced copy of it, and every coordinate reported is mapped
   back to *source* pixel coordinates (after EXIF orientation).

Measured vs defaulted (see ``to_image_row``): faces, face area, group size,
brightness, warmth, contrast, palette, text presence and style are measured;
expression is "none"/"neutral" only, villain_shown/cast_shown/tone/theme_tags are
placeholders an editor must supply.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2

from keyart.jobs.artwork.analysis.colour import colour_stats
from keyart.jobs.artwork.analysis.decode import ArtworkError, Box, load_image
from keyart.jobs.artwork.analysis.faces import detect_faces
from keyart.jobs.artwork.analysis.saliency import saliency_focal
from keyart.jobs.artwork.analysis.text import detect_text

__all__ = [
    "ArtworkError",
    "Box",
    "ImageAnalysis",
    "analyze_image",
    "analyze_paths",
    "expand_paths",
    "style_for",
    "to_image_row",
]

IMAGE_SUFFIXES: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".webp"})

# Style from the largest face's share of the frame (Haar boxes are tight: brows to
# mouth, so a head-and-shoulders close-up is ~0.10 and a waist-up portrait ~0.03).
CLOSEUP_FACE_AREA = 0.10
CHARACTER_FACE_AREA = 0.015
ENSEMBLE_MIN_FACES = 3


@dataclass(frozen=True)
class ImageAnalysis:
    """What ``analyze_image`` measured. Coordinates are source pixels (EXIF-upright)."""

    path: str
    format: str
    width: int  # source size
    height: int
    decoded_width: int  # largest pixel array materialised while decoding
    decoded_height: int
    work_width: int  # working image size (<= max_side)
    work_height: int
    faces: tuple[Box, ...]  # largest first
    face_area: float  # share of the frame covered by the largest face box, 0..1
    focal_x: float
    focal_y: float
    focal_source: str  # "face" or "saliency"
    brightness: float  # 0..1, mean luma
    warmth: float  # -1 (cool) .. 1 (warm)
    contrast: float  # 0..1, 2 * RMS luma contrast, clipped
    palette: str  # one of domain.PALETTES
    palette_shares: dict[str, float] = field(default_factory=dict)
    swatches: tuple[str, ...] = ()  # dominant colours, "#rrggbb", most common first
    text_present: bool = False
    text_boxes: tuple[Box, ...] = ()  # text line boxes, source pixels
    seconds: float = 0.0

    @property
    def num_faces(self) -> int:
        return len(self.faces)

    @property
    def group_size(self) -> int:
        """People visible, estimated as the number of detected frontal faces."""
        return len(self.faces)

    @property
    def focal_point(self) -> tuple[float, float]:
        return (self.focal_x, self.focal_y)

    @property
    def style(self) -> str:
        return style_for(len(self.faces), self.face_area)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["faces"] = [list(b) for b in self.faces]
        d["text_boxes"] = [list(b) for b in self.text_boxes]
        d["swatches"] = list(self.swatches)
        d["num_faces"] = self.num_faces
        d["group_size"] = self.group_size
        d["style"] = self.style
        return d


def style_for(num_faces: int, face_area: float) -> str:
    """closeup / character / ensemble / scene from face count and largest face area."""
    if num_faces >= ENSEMBLE_MIN_FACES:
        return "ensemble"
    if num_faces == 0:
        return "scene"
    if face_area >= CLOSEUP_FACE_AREA:
        return "closeup"
    if face_area >= CHARACTER_FACE_AREA:
        return "character"
    return "scene"


def analyze_image(path: Path | str, max_side: int = 1600) -> ImageAnalysis:
    """Analyse one JPEG/PNG/WebP file; raises ``ArtworkError`` if it cannot be read."""
    t0 = time.perf_counter()
    path = Path(path)
    loaded = load_image(path, max_side=max_side)
    rgb = loaded.rgb
    wh, ww = rgb.shape[:2]
    sx, sy = loaded.width / ww, loaded.height / wh  # work -> source
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)

    def to_src(b: Box) -> Box:
        x, y, w, h = b
        return (
            round(x * sx),
            round(y * sy),
            min(loaded.width, round(w * sx)),
            min(loaded.height, round(h * sy)),
        )

    faces = tuple(to_src(b) for b in detect_faces(gray))
    frame = float(loaded.width * loaded.height)
    face_area = float(faces[0][2] * faces[0][3] / frame) if faces else 0.0
    if faces:
        # main face: the largest; among near-equal sizes, the one nearest the centre
        big = faces[0][2] * faces[0][3]
        near = [f for f in faces if f[2] * f[3] >= 0.8 * big]
        cxs, cys = loaded.width / 2, loaded.height / 2
        main = min(near, key=lambda f: (f[0] + f[2] / 2 - cxs) ** 2 + (f[1] + f[3] / 2 - cys) ** 2)
        fx, fy, src = main[0] + main[2] / 2, main[1] + main[3] / 2, "face"
    else:
        wx, wy = saliency_focal(gray)
        fx, fy, src = wx * sx, wy * sy, "saliency"
    text = tuple(to_src(b) for b in detect_text(gray))
    colour = colour_stats(rgb)
    return ImageAnalysis(
        path=str(path),
        format=loaded.format,
        width=loaded.width,
        height=loaded.height,
        decoded_width=loaded.decoded_width,
        decoded_height=loaded.decoded_height,
        work_width=ww,
        work_height=wh,
        faces=faces,
        face_area=round(face_area, 5),
        focal_x=round(float(fx), 1),
        focal_y=round(float(fy), 1),
        focal_source=src,
        text_present=bool(text),
        text_boxes=text,
        seconds=round(time.perf_counter() - t0, 4),
        **colour,
    )


def expand_paths(paths: Iterable[Path | str]) -> Iterator[tuple[Path, bool]]:
    """Files to analyse: (path, came_from_folder). Folders are walked recursively,
    keeping JPEG/PNG/WebP by suffix; hidden files are skipped; order is sorted."""
    for p in paths:
        p = Path(p)
        if p.is_dir():
            found = sorted(
                f
                for f in p.rglob("*")
                if f.is_file()
                and f.suffix.lower() in IMAGE_SUFFIXES
                and not any(part.startswith(".") for part in f.relative_to(p).parts)
            )
            if not found:
                yield p, True
            for f in found:
                yield f, True
        else:
            yield p, False


def analyze_paths(
    paths: Iterable[Path | str], max_side: int = 1600, progress: bool | None = None
) -> Iterator[ImageAnalysis | ArtworkError]:
    """Analyse files and folders, yielding an analysis or an ``ArtworkError`` per file.

    Never stops at a bad file. A folder without images yields one ``ArtworkError``.
    A tqdm progress bar (stderr) is shown when a folder was expanded, unless
    ``progress`` is False.
    """
    items = list(expand_paths(paths))
    show = any(from_dir for _, from_dir in items) if progress is None else progress
    bar = None
    if show:
        from tqdm import tqdm

        bar = tqdm(total=len(items), unit="img", desc="artwork", leave=False)
    try:
        for p, _ in items:
            if p.is_dir():
                yield ArtworkError(p, "no JPEG, PNG or WebP files in folder")
            else:
                try:
                    yield analyze_image(p, max_side=max_side)
                except ArtworkError as exc:
                    yield exc
                except Exception as exc:  # noqa: BLE001 - one bad file must not stop the batch
                    yield ArtworkError(p, f"analysis failed: {type(exc).__name__}: {exc}")
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()


# Which ImageInfo fields are measured and which are placeholders.
MEASURED_FIELDS: tuple[str, ...] = (
    "num_faces",
    "face_area",
    "group_size",
    "brightness",
    "warmth",
    "contrast",
    "palette",
    "text_present",
    "style",
)
DEFAULTED_FIELDS: dict[str, str] = {
    "expression": "'none' without a face, else 'neutral' (no expression model)",
    "villain_shown": "False (needs cast identification)",
    "cast_shown": "[] (needs cast identification)",
    "tone": "'drama' placeholder (unknown; set by an editor)",
    "theme_tags": "[]",
    "active": "True",
}


def to_image_row(
    analysis: ImageAnalysis, image_id: str, title_id: str, lineage_id: str
) -> dict[str, Any]:
    """A row of the catalog images table (column names = ``domain.ImageInfo`` fields).

    Tuples are lists (as in the world's images.parquet). See MEASURED_FIELDS and
    DEFAULTED_FIELDS for what is measured and what is a placeholder.
    """
    n = analysis.num_faces
    return {
        "image_id": image_id,
        "title_id": title_id,
        "lineage_id": lineage_id,
        "num_faces": n,
        "face_area": float(analysis.face_area),
        "expression": "none" if n == 0 else "neutral",
        "villain_shown": False,
        "cast_shown": [],
        "group_size": analysis.group_size,
        "brightness": float(analysis.brightness),
        "warmth": float(analysis.warmth),
        "contrast": float(analysis.contrast),
        "tone": "drama",
        "style": analysis.style,
        "palette": analysis.palette,
        "text_present": bool(analysis.text_present),
        "theme_tags": [],
        "active": True,
    }
