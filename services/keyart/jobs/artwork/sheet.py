"""Contact sheets so an artist can check the analysis by eye.

``write_contact_sheet`` writes one self-contained HTML file: per image one
``<img>`` (a base64 JPEG thumbnail drawn with OpenCV) showing face boxes, text
boxes, the focal point, every crop rectangle in its own colour and the badge
placement chosen inside each crop, next to a table of the measured attributes.
``write_contact_png`` writes the same drawings as one PNG mosaic.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from keyart.jobs.artwork.analysis import ArtworkError, ImageAnalysis, load_image
from keyart.jobs.artwork.badges import ANCHORS, BadgePlacement, place_badge
from keyart.jobs.artwork.crops import RATIOS, Crop, Ratio, crops_for

# BGR colours per crop ratio (distinct hues), then a fallback cycle for custom ratios
CROP_COLOURS: tuple[tuple[int, int, int], ...] = (
    (255, 160, 0),  # blue-ish
    (255, 0, 255),  # magenta
    (0, 200, 255),  # orange
    (255, 255, 0),  # cyan
    (0, 128, 255),
    (128, 0, 255),
)
FACE_COLOUR = (0, 220, 0)
TEXT_COLOUR = (0, 255, 255)
FOCAL_COLOUR = (0, 0, 255)
DEFAULT_BADGE = (0.3, 0.12)  # relative to the crop


@dataclass(frozen=True)
class Drawn:
    image: np.ndarray  # BGR thumbnail with overlays
    crops: dict[str, Crop]
    badges: dict[str, BadgePlacement]


def _hex(bgr: tuple[int, int, int]) -> str:
    b, g, r = bgr
    return f"#{r:02x}{g:02x}{b:02x}"


def draw_analysis(
    analysis: ImageAnalysis,
    thumb_side: int = 480,
    ratios: Mapping[str, Ratio] | None = None,
    badge_size: tuple[float, float] = DEFAULT_BADGE,
    badge_anchors: Sequence[str] = ANCHORS,
) -> Drawn:
    """A thumbnail of the source with every overlay drawn on it."""
    ratios = RATIOS if ratios is None else ratios
    loaded = load_image(analysis.path, max_side=thumb_side)
    img = cv2.cvtColor(loaded.rgb, cv2.COLOR_RGB2BGR)
    th, tw = img.shape[:2]
    s = tw / analysis.width

    def pt(x: float, y: float) -> tuple[int, int]:
        return (round(x * s), round(y * (th / analysis.height)))

    crops = crops_for(analysis, ratios)
    badges = {
        name: place_badge(c, analysis, badge_size, badge_anchors) for name, c in crops.items()
    }
    overlay = img.copy()
    for i, (name, c) in enumerate(crops.items()):
        col = CROP_COLOURS[i % len(CROP_COLOURS)]
        b = badges[name]
        if b.ok:
            cv2.rectangle(overlay, pt(b.x, b.y), pt(b.x + b.w, b.y + b.h), col, -1)
    img = cv2.addWeighted(overlay, 0.35, img, 0.65, 0)
    for i, (name, c) in enumerate(crops.items()):
        col = CROP_COLOURS[i % len(CROP_COLOURS)]
        p0, p1 = pt(c.x, c.y), pt(c.x + c.w, c.y + c.h)
        inset = 1 + i  # stagger so coincident edges stay visible
        cv2.rectangle(
            img,
            (p0[0] + inset, p0[1] + inset),
            (p1[0] - inset - 1, p1[1] - inset - 1),
            col,
            1,
            cv2.LINE_AA,
        )
        label = name + (" CUT" if c.cuts_face else "")
        cv2.putText(
            img,
            label,
            (p0[0] + inset + 3, p0[1] + 14 + 14 * i),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.45,
            col,
            1,
            cv2.LINE_AA,
        )
        b = badges[name]
        if b.ok:
            cv2.rectangle(img, pt(b.x, b.y), pt(b.x + b.w, b.y + b.h), col, 1, cv2.LINE_AA)
    for x, y, w, h in analysis.text_boxes:
        cv2.rectangle(img, pt(x, y), pt(x + w, y + h), TEXT_COLOUR, 1, cv2.LINE_AA)
    for x, y, w, h in analysis.faces:
        cv2.rectangle(img, pt(x, y), pt(x + w, y + h), FACE_COLOUR, 2, cv2.LINE_AA)
    f = pt(analysis.focal_x, analysis.focal_y)
    cv2.circle(img, f, 7, FOCAL_COLOUR, 2, cv2.LINE_AA)
    cv2.drawMarker(img, f, FOCAL_COLOUR, cv2.MARKER_CROSS, 18, 1, cv2.LINE_AA)
    return Drawn(img, crops, badges)


def _jpeg_b64(img: np.ndarray, quality: int = 85) -> str:
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return base64.b64encode(buf.tobytes()).decode("ascii")


_CSS = """
body{font-family:system-ui,sans-serif;margin:16px;background:#1d1d1d;color:#ddd}
.card{display:flex;gap:16px;margin:12px 0;padding:12px;background:#2a2a2a;border-radius:6px}
.card img{max-width:480px;height:auto;align-self:flex-start}
table{border-collapse:collapse;font-size:13px}td{padding:2px 8px;vertical-align:top}
td:first-child{color:#999}.sw{display:inline-block;width:16px;height:16px;margin-right:2px;border:1px solid #555}
.bad{color:#ff7070}.ok{color:#8f8}.legend span{margin-right:14px}.err{color:#ff7070}
"""


def write_contact_sheet(
    analyses: Iterable[ImageAnalysis | ArtworkError],
    out: Path | str,
    thumb_side: int = 480,
    ratios: Mapping[str, Ratio] | None = None,
    badge_size: tuple[float, float] = DEFAULT_BADGE,
    badge_anchors: Sequence[str] = ANCHORS,
) -> Path:
    """Write a self-contained HTML contact sheet; returns its path.

    Errors (``ArtworkError`` items) are listed at the end, without an image.
    """
    out = Path(out)
    ratios = RATIOS if ratios is None else ratios
    esc = html.escape
    legend = [
        f'<span style="color:{_hex(FACE_COLOUR)}">&#9632; faces</span>',
        f'<span style="color:{_hex(TEXT_COLOUR)}">&#9632; text</span>',
        f'<span style="color:{_hex(FOCAL_COLOUR)}">&#9679; focal point</span>',
    ] + [
        f'<span style="color:{_hex(CROP_COLOURS[i % len(CROP_COLOURS)])}">&#9633; crop {esc(n)} (filled: badge)</span>'
        for i, n in enumerate(ratios)
    ]
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>Keyart contact sheet</title>",
        f"<style>{_CSS}</style></head><body><h1>Keyart contact sheet</h1>",
        f"<p class='legend'>{''.join(legend)}</p>",
    ]
    errors: list[ArtworkError] = []
    count = 0
    for a in analyses:
        if isinstance(a, ArtworkError):
            errors.append(a)
            continue
        try:
            drawn = draw_analysis(a, thumb_side, ratios, badge_size, badge_anchors)
        except ArtworkError as exc:  # file changed or vanished since analysis
            errors.append(exc)
            continue
        count += 1
        rows = [
            ("file", esc(a.path)),
            (
                "size",
                f"{a.width}x{a.height} {esc(a.format)} (analysed at {a.work_width}x{a.work_height})",
            ),
            (
                "faces",
                f"{a.num_faces} &middot; largest {a.face_area:.3f} of frame &middot; style {esc(a.style)}",
            ),
            ("focal", f"({a.focal_x:.0f}, {a.focal_y:.0f}) from {esc(a.focal_source)}"),
            (
                "palette",
                esc(a.palette)
                + " "
                + "".join(f"<span class='sw' style='background:{c}'></span>" for c in a.swatches),
            ),
            (
                "tone",
                f"brightness {a.brightness:.2f} &middot; warmth {a.warmth:+.2f} &middot; contrast {a.contrast:.2f}",
            ),
            (
                "text",
                f"{'yes' if a.text_present else 'no'} ({len(a.text_boxes)} line boxes, heuristic)",
            ),
        ]
        for name, c in drawn.crops.items():
            b = drawn.badges[name]
            crop_txt = f"{c.w}x{c.h} at ({c.x}, {c.y})"
            crop_txt += " <b class='bad'>cuts a face</b>" if c.cuts_face else ""
            badge_txt = (
                f"<span class='ok'>badge {esc(b.anchor)}</span>"
                if b.ok
                else f"<span class='bad'>no badge: {esc(b.reason)}</span>"
            )
            rows.append((f"crop {esc(name)}", f"{crop_txt} &middot; {badge_txt}"))
        table = "".join(f"<tr><td>{k}</td><td>{v}</td></tr>" for k, v in rows)
        parts.append(
            f"<div class='card'><img alt='{esc(Path(a.path).name)}' "
            f"src='data:image/jpeg;base64,{_jpeg_b64(drawn.image)}'><table>{table}</table></div>"
        )
    if errors:
        parts.append("<h2 class='err'>Could not analyse</h2><ul>")
        parts += [f"<li class='err'>{esc(str(e.path))}: {esc(e.reason)}</li>" for e in errors]
        parts.append("</ul>")
    parts.append(f"<p>{count} image(s), {len(errors)} error(s).</p></body></html>")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(parts), encoding="utf-8")
    return out


def write_contact_png(
    analyses: Iterable[ImageAnalysis | ArtworkError],
    out: Path | str,
    cell: int = 360,
    cols: int = 4,
    ratios: Mapping[str, Ratio] | None = None,
    badge_size: tuple[float, float] = DEFAULT_BADGE,
) -> Path:
    """The drawn thumbnails as one PNG mosaic (errors skipped); returns its path."""
    out = Path(out)
    tiles: list[np.ndarray] = []
    for a in analyses:
        if isinstance(a, ArtworkError):
            continue
        try:
            img = draw_analysis(a, cell, ratios, badge_size).image
        except ArtworkError:
            continue
        tile = np.full((cell + 20, cell, 3), 30, np.uint8)
        tile[: img.shape[0], : img.shape[1]] = img
        cv2.putText(
            tile,
            Path(a.path).name[:40],
            (4, cell + 15),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.4,
            (220, 220, 220),
            1,
            cv2.LINE_AA,
        )
        tiles.append(tile)
    if not tiles:
        tiles.append(np.full((cell + 20, cell, 3), 30, np.uint8))
    cols = max(1, min(cols, len(tiles)))
    while len(tiles) % cols:
        tiles.append(np.full_like(tiles[0], 30))
    rows = [np.hstack(tiles[i : i + cols]) for i in range(0, len(tiles), cols)]
    out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(out), np.vstack(rows)):
        raise OSError(f"cannot write {out}")
    return out
