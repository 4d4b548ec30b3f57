"""Place a badge ("New episode", a localized title) inside a crop, never over a face
or over text already in the image.

The badge is tried at each allowed anchor in the caller's order of preference; the
first anchor whose box (inset by a margin from the crop edges) overlaps no padded
face box and no detected text box wins. If none qualifies the result has
``ok=False`` and a reason naming what blocked each anchor: a badge is never placed
badly.

Sizes are either relative (``units="relative"``: width as a fraction of the crop
width, height as a fraction of the crop height) or pixels of the source image
(``units="px"``). All boxes are source pixel coordinates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from keyart.jobs.artwork.analysis import Box, ImageAnalysis
from keyart.jobs.artwork.crops import Crop

ANCHORS: tuple[str, ...] = (
    "top-left",
    "top-right",
    "bottom-left",
    "bottom-right",
    "top-center",
    "bottom-center",
)


@dataclass(frozen=True)
class BadgePlacement:
    """Where the badge goes (source pixels) or why it cannot go anywhere."""

    ok: bool
    anchor: str = ""
    x: int = 0
    y: int = 0
    w: int = 0
    h: int = 0
    reason: str = ""
    blocked: dict[str, str] = field(default_factory=dict)  # anchor -> what it hit

    @property
    def box(self) -> Box:
        return (self.x, self.y, self.w, self.h)


def _overlaps(a: Box, b: Box) -> bool:
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


def _pad(b: Box, frac: float) -> Box:
    dx, dy = b[2] * frac, b[3] * frac
    return (int(b[0] - dx), int(b[1] - dy), round(b[2] + 2 * dx), round(b[3] + 2 * dy))


def _anchor_box(crop: Crop, anchor: str, w: int, h: int, m: int) -> Box:
    vert, _, horiz = anchor.partition("-")
    if horiz == "left":
        x = crop.x + m
    elif horiz == "right":
        x = crop.x + crop.w - m - w
    else:  # center
        x = crop.x + (crop.w - w) // 2
    y = crop.y + m if vert == "top" else crop.y + crop.h - m - h
    return (x, y, w, h)


def place_badge(
    crop: Crop,
    analysis: ImageAnalysis,
    size: tuple[float, float],
    anchors: Sequence[str] = ANCHORS,
    units: Literal["relative", "px"] = "relative",
    margin: float = 0.03,
    face_padding: float = 0.15,
    avoid_text: bool = True,
) -> BadgePlacement:
    """Choose a badge position inside ``crop`` that covers no face and no text.

    ``margin`` is the inset from the crop edges as a fraction of the crop's shorter
    side; ``face_padding`` grows each face box by that fraction of its size on every
    side (Haar boxes stop at the brows and chin, hair and jaw need room too).
    """
    bad = [a for a in anchors if a not in ANCHORS]
    if bad:
        raise ValueError(f"unknown anchor(s) {bad}; expected some of {list(ANCHORS)}")
    if not anchors:
        raise ValueError("no anchors allowed")
    bw_f, bh_f = size
    if bw_f <= 0 or bh_f <= 0:
        raise ValueError("badge size must be positive")
    if units == "relative":
        bw, bh = round(bw_f * crop.w), round(bh_f * crop.h)
    elif units == "px":
        bw, bh = round(bw_f), round(bh_f)
    else:
        raise ValueError("units must be 'relative' or 'px'")
    bw, bh = max(1, int(bw)), max(1, int(bh))
    m = round(margin * min(crop.w, crop.h))
    if bw + 2 * m > crop.w or bh + 2 * m > crop.h:
        return BadgePlacement(
            ok=False,
            w=bw,
            h=bh,
            reason=f"badge {bw}x{bh} px (+margin {m}) does not fit crop {crop.w}x{crop.h}",
        )
    faces = [_pad(f, face_padding) for f in analysis.faces]
    texts = list(analysis.text_boxes) if avoid_text else []
    blocked: dict[str, str] = {}
    for anchor in anchors:
        box = _anchor_box(crop, anchor, bw, bh, m)
        hits = [f"face {i}" for i, f in enumerate(faces) if _overlaps(box, f)]
        hits += [f"text {i}" for i, t in enumerate(texts) if _overlaps(box, t)]
        if not hits:
            return BadgePlacement(True, anchor, *box, blocked=blocked)
        blocked[anchor] = ", ".join(hits)
    reason = "every allowed anchor is blocked: " + "; ".join(
        f"{a}: {why}" for a, why in blocked.items()
    )
    return BadgePlacement(ok=False, w=bw, h=bh, reason=reason, blocked=blocked)
