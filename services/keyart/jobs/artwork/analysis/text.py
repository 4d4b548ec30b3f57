"""Text line detection (a heuristic, not OCR) from MSER glyph candidates.

Exists so badges can avoid titles and captions already printed on the artwork.
"""

from __future__ import annotations

import cv2
import numpy as np

from keyart.jobs.artwork.analysis.decode import Box, _resize_max

TEXT_MAX_SIDE = 1000  # text (MSER) detection image size


def detect_text(gray: np.ndarray) -> list[Box]:
    """Text line boxes (gray image's coords) by MSER character candidates + line grouping.

    A heuristic, not OCR: it finds rows of >= 3 similar-height, blob-like regions
    side by side. Reliable on title treatments, credits and captions of normal
    weight; misses very large single words of 1-2 letters, heavily stylised or
    curved lettering, and can fire on regular man-made patterns (windows, fences,
    keyboards). Treat ``text_present`` as a hint for badge avoidance, not a fact.
    """
    small, s = _resize_max(gray, TEXT_MAX_SIDE)
    H, W = small.shape[:2]
    mser = cv2.MSER_create(  # type: ignore[attr-defined]
        delta=5, min_area=12, max_area=max(60, int(0.02 * H * W))
    )
    regions, bboxes = mser.detectRegions(small)
    cands: list[tuple[int, int, int, int]] = []
    for pts, (x, y, w, h) in zip(regions, bboxes if len(bboxes) else []):
        if h < 8 or h > 0.25 * H or w < 2:
            continue
        ar = w / h
        if ar < 0.08 or ar > 1.6:
            continue
        fill = len(pts) / float(w * h)
        if fill < 0.12 or fill > 0.9:
            continue
        if not _glyph_like(pts, int(x), int(y), int(w), int(h)):
            continue
        cands.append((int(x), int(y), int(w), int(h)))
    if len(cands) < 3:
        return []
    # drop near-duplicate boxes (MSER returns nested regions of one glyph)
    cands.sort(key=lambda b: (b[0], b[1], -b[2] * b[3]))
    uniq: list[tuple[int, int, int, int]] = []
    for b in cands:
        if any(_iou(b, u) > 0.6 for u in uniq[-12:]):
            continue
        uniq.append(b)
    n = len(uniq)
    if n < 3 or n > 6000:
        return []
    arr = np.array(uniq, dtype=np.float32)
    x, y, w, h = arr[:, 0], arr[:, 1], arr[:, 2], arr[:, 3]
    cy = y + h / 2
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    order = np.argsort(x)
    xs_sorted = x[order]
    for ii, i in enumerate(order):
        # neighbours to the right within 1.2 heights
        reach = x[i] + w[i] + 1.2 * h[i]
        jj = ii + 1
        while jj < n and xs_sorted[jj] <= reach:
            j = order[jj]
            jj += 1
            hmax = max(h[i], h[j])
            if abs(h[i] - h[j]) > 0.35 * hmax or abs(cy[i] - cy[j]) > 0.3 * hmax:
                continue
            if x[j] < x[i] + 0.3 * w[i]:  # overlapping / nested, not the next letter
                continue
            parent[find(int(i))] = find(int(j))
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(find(i), []).append(i)
    lines: list[Box] = []
    for members in groups.values():
        if len(members) < 3:
            continue
        hs = h[members]
        x0, y0 = float(x[members].min()), float(y[members].min())
        x1 = float((x[members] + w[members]).max())
        y1 = float((y[members] + h[members]).max())
        med_h = float(np.median(hs))
        if x1 - x0 < 2.5 * med_h or y1 - y0 > 2.0 * med_h:
            continue
        # height consistency across the line
        if float(hs.std()) > 0.25 * med_h:
            continue
        if not _two_tone(small[int(y0) : int(y1), int(x0) : int(x1)]):
            continue
        lines.append((int(x0 / s), int(y0 / s), round((x1 - x0) / s), round((y1 - y0) / s)))
    return lines


def _glyph_like(pts: np.ndarray, x: int, y: int, w: int, h: int) -> bool:
    """Constant stroke width (the stroke width transform's idea, via a distance
    transform): glyphs have ridge widths with low spread relative to their height."""
    mask = np.zeros((h + 2, w + 2), np.uint8)
    mask[pts[:, 1] - y + 1, pts[:, 0] - x + 1] = 255
    dist = cv2.distanceTransform(mask, cv2.DIST_L2, 3)
    ridge = (dist > 0) & (dist >= cv2.dilate(dist, np.ones((3, 3), np.uint8)) - 1e-3)
    vals = dist[ridge]
    if len(vals) < 3:
        return False
    mean = float(vals.mean())
    if 2 * mean > 0.4 * h:  # blobs, not strokes
        return False
    return float(vals.std()) / mean < 0.5


def _two_tone(patch: np.ndarray) -> bool:
    """Text lines are two-tone: Otsu's threshold explains most of the variance."""
    if patch.size < 16:
        return False
    v = patch.astype(np.float32).ravel()
    var = float(v.var())
    if var < 150.0:  # low contrast (std < ~12 grey levels)
        return False
    t, _ = cv2.threshold(patch, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    lo, hi = v[v <= t], v[v > t]
    if len(lo) == 0 or len(hi) == 0:
        return False
    w0, w1 = len(lo) / len(v), len(hi) / len(v)
    between = w0 * w1 * (float(lo.mean()) - float(hi.mean())) ** 2
    return between / var > 0.7


def _iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    ix = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0
