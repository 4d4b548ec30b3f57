"""Crops of one source image for every screen shape, kept around the focal point.

A crop is the *largest* rectangle of the target aspect ratio inside the source
(it spans the full width or the full height), slid along the free axis so that

1. it never cuts through a detected face (a face is either wholly inside or wholly
   outside) whenever some position allows that,
2. it contains the focal point (always possible: the crop spans one full axis),
3. among those positions, the focal point is as close to the crop centre as possible.

When every position cuts a face, the one cutting the least face area (then the
most centred) is returned with ``cuts_face=True`` so callers can flag it.

Each crop is a *variant* of the source: ``variant_id(source, ratio)`` is
deterministic and the variant shares the source's lineage id, so outcomes of every
crop roll up to one source image.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from keyart.domain import DEVICE_ASPECT, DEVICES
from keyart.jobs.artwork.analysis import Box, ImageAnalysis


@dataclass(frozen=True)
class Ratio:
    """A target aspect ratio, e.g. Ratio("16:9", 16, 9)."""

    name: str
    w: int
    h: int

    @property
    def value(self) -> float:
        return self.w / self.h

    @property
    def slug(self) -> str:
        return f"{self.w}x{self.h}"

    @classmethod
    def parse(cls, spec: str | Ratio | tuple[int, int]) -> Ratio:
        """'16:9', '16x9', (16, 9) or a Ratio."""
        if isinstance(spec, Ratio):
            return spec
        if isinstance(spec, tuple):
            w, h = spec
            return cls(f"{int(w)}:{int(h)}", int(w), int(h))
        m = re.fullmatch(r"\s*(\d+)\s*[:x/]\s*(\d+)\s*", str(spec))
        if not m or int(m.group(1)) <= 0 or int(m.group(2)) <= 0:
            raise ValueError(f"bad aspect ratio {spec!r}; expected W:H like 16:9")
        return cls(f"{int(m.group(1))}:{int(m.group(2))}", int(m.group(1)), int(m.group(2)))


# The shapes the product renders; callers may pass their own mapping.
RATIOS: dict[str, Ratio] = {
    "16:9": Ratio("16:9", 16, 9),  # TV, web rows
    "2:3": Ratio("2:3", 2, 3),  # portrait phone
    "1:1": Ratio("1:1", 1, 1),  # square tile
    "4:3": Ratio("4:3", 4, 3),  # tablet
}
DEVICE_RATIO: dict[str, str] = DEVICE_ASPECT
assert set(DEVICE_RATIO) == set(DEVICES)


def ratio_for_device(device: str, device_ratio: Mapping[str, str] = DEVICE_RATIO) -> Ratio:
    """The crop shape shown on a device (one of domain.DEVICES)."""
    try:
        return Ratio.parse(device_ratio[device.upper()])
    except KeyError:
        raise ValueError(
            f"unknown device {device!r}; expected one of {sorted(device_ratio)}"
        ) from None


@dataclass(frozen=True)
class Crop:
    """A crop rectangle in source pixels."""

    x: int
    y: int
    w: int
    h: int
    cuts_face: bool
    ratio: str = ""

    @property
    def box(self) -> Box:
        return (self.x, self.y, self.w, self.h)

    def contains(self, px: float, py: float) -> bool:
        return self.x <= px <= self.x + self.w and self.y <= py <= self.y + self.h


def _size(width: int, height: int, r: Ratio) -> tuple[int, int]:
    """Largest w x h of ratio r inside width x height (integer pixels)."""
    if width * r.h >= height * r.w:  # source is wider than the ratio: full height
        h = height
        w = min(width, max(1, round(height * r.w / r.h)))
    else:
        w = width
        h = min(height, max(1, round(width * r.h / r.w)))
    return w, h


def _slide(length: int, span: int, focal: float, faces: list[tuple[int, int]]) -> tuple[int, bool]:
    """Best offset in [0, length - span] on one axis; faces as (start, end) intervals."""
    slack = length - span
    if slack <= 0:  # the crop is the whole axis: nothing can be cut on it
        return 0, False
    o = np.arange(slack + 1, dtype=np.float64)
    cut_amount = np.zeros_like(o)
    for a, b in faces:
        overlap = np.clip(np.minimum(o + span, b) - np.maximum(o, a), 0, None)
        size = max(1, b - a)
        partial = (overlap > 0) & (overlap < size)
        # face area the crop boundary slices off (or keeps, whichever is smaller)
        cut_amount += np.where(partial, np.minimum(overlap, size - overlap) / size, 0.0)
    focal_in = (o <= focal) & (focal <= o + span)
    ideal = min(max(focal - span / 2, 0.0), float(slack))
    dist = np.abs(o - ideal)
    clean = focal_in & (cut_amount == 0)
    if clean.any():
        idx = int(np.argmin(np.where(clean, dist, np.inf)))
        return int(o[idx]), False
    cand = np.where(focal_in, cut_amount, np.inf)
    best = cand.min()
    idx = int(np.argmin(np.where(cand <= best + 1e-9, dist, np.inf)))
    return int(o[idx]), True


def crop_for(analysis: ImageAnalysis, ratio: str | Ratio | tuple[int, int]) -> Crop:
    """The largest crop of ``ratio`` keeping the focal point and, when possible, every
    detected face whole (see module doc)."""
    r = Ratio.parse(ratio)
    W, H = analysis.width, analysis.height
    w, h = _size(W, H, r)
    fx = min(max(analysis.focal_x, 0.0), float(W))
    fy = min(max(analysis.focal_y, 0.0), float(H))
    if w < W:  # slide horizontally
        faces = [(fb[0], fb[0] + fb[2]) for fb in analysis.faces]
        x, cut = _slide(W, w, fx, faces)
        return Crop(x, 0, w, h, cut, r.name)
    faces = [(fb[1], fb[1] + fb[3]) for fb in analysis.faces]
    y, cut = _slide(H, h, fy, faces)
    return Crop(0, y, w, h, cut, r.name)


def crops_for(
    analysis: ImageAnalysis, ratios: Mapping[str, Ratio] | None = None
) -> dict[str, Crop]:
    """A crop for every ratio (default: RATIOS), keyed by ratio name."""
    ratios = RATIOS if ratios is None else ratios
    return {name: crop_for(analysis, r) for name, r in ratios.items()}


def variant_id(source_image_id: str, ratio_name: str | Ratio) -> str:
    """Deterministic id of the crop variant of a source image, e.g. 'i000123-16x9'."""
    r = Ratio.parse(ratio_name)
    return f"{source_image_id}-{r.slug}"


@dataclass(frozen=True)
class CropVariant:
    """One crop of a source image, served as its own image sharing the source lineage."""

    variant_id: str
    source_image_id: str
    lineage_id: str
    ratio: str
    crop: Crop


def crop_variants(
    analysis: ImageAnalysis,
    source_image_id: str,
    lineage_id: str,
    ratios: Mapping[str, Ratio] | None = None,
) -> list[CropVariant]:
    """Every crop of a source as a variant record (same lineage id as the source)."""
    return [
        CropVariant(variant_id(source_image_id, r), source_image_id, lineage_id, r.name, c)
        for (name, c), r in zip(crops_for(analysis, ratios).items(), (ratios or RATIOS).values())
    ]
