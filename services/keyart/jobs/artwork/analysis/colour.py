"""Colour measurements of an image: brightness, warmth, contrast, palette, swatches.

Exists to fill the catalog's colour fields (``domain.PALETTES``) from pixels.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from keyart.jobs.artwork.analysis.decode import _resize_max
from keyart.jobs.world.vocab import PALETTES

COLOUR_MAX_SIDE = 256  # brightness / warmth / contrast / palette

# Hue bins in degrees [start, end) on the HSV wheel; red wraps around 0.
_HUE_BINS: tuple[tuple[str, float, float], ...] = (
    ("red", 345.0, 15.0),
    ("orange", 15.0, 40.0),
    ("yellow", 40.0, 70.0),
    ("green", 70.0, 160.0),
    ("teal", 160.0, 195.0),
    ("blue", 195.0, 255.0),
    ("purple", 255.0, 345.0),
)
MONO_SHARE = 0.65  # image is "mono" when this share of its pixels is achromatic


def colour_stats(rgb: np.ndarray) -> dict[str, Any]:
    """brightness, warmth, contrast, palette (+ shares) and swatches of an RGB image."""
    small, _ = _resize_max(rgb, COLOUR_MAX_SIDE)
    f = small.astype(np.float32) / 255.0
    luma = 0.2126 * f[..., 0] + 0.7152 * f[..., 1] + 0.0722 * f[..., 2]
    brightness = float(luma.mean())
    contrast = float(min(1.0, 2.0 * luma.std()))
    warmth = float(np.tanh(2.5 * (f[..., 0].mean() - f[..., 2].mean())))

    hsv = cv2.cvtColor(small, cv2.COLOR_RGB2HSV_FULL).reshape(-1, 3).astype(np.float32)
    hue = hsv[:, 0] * (360.0 / 256.0)
    sat = hsv[:, 1] / 255.0
    val = hsv[:, 2] / 255.0
    chroma = sat * val
    chromatic = (sat >= 0.2) & (val >= 0.15) & (chroma >= 0.1)
    shares = {p: 0.0 for p in PALETTES}
    n = float(len(hue))
    shares["mono"] = float((~chromatic).sum() / n)
    wts = np.where(chromatic, chroma, 0.0)
    tot = float(wts.sum())
    for name, lo, hi in _HUE_BINS:
        sel = (hue >= lo) | (hue < hi) if lo > hi else (hue >= lo) & (hue < hi)
        share_w = float(wts[sel].sum()) / tot if tot > 0 else 0.0
        shares[name] = share_w * (1.0 - shares["mono"])
    if shares["mono"] >= MONO_SHARE or tot <= 0:
        palette = "mono"
    else:
        palette = max((p for p in PALETTES if p != "mono"), key=lambda p: shares[p])

    swatches: list[str] = []
    px = small.reshape(-1, 3).astype(np.float32)
    if len(px) >= 5:
        cv2.setRNGSeed(7)  # deterministic swatches (k-means++ seeding uses cv::theRNG)
        _, labels, centers = cv2.kmeans(  # type: ignore[call-overload]
            px,
            5,
            None,
            (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 10, 1.0),
            1,
            cv2.KMEANS_PP_CENTERS,
        )
        counts = np.bincount(labels.ravel(), minlength=5)
        for k in np.argsort(-counts):
            r, g, b = (round(c) for c in centers[k])
            swatches.append(f"#{r:02x}{g:02x}{b:02x}")
    return {
        "brightness": round(brightness, 4),
        "warmth": round(warmth, 4),
        "contrast": round(contrast, 4),
        "palette": palette,
        "palette_shares": {k: round(v, 4) for k, v in shares.items()},
        "swatches": tuple(swatches),
    }
