"""Decode an artwork file into a small RGB working image without exhausting memory.

Exists because decoding is where untrusted files fail and where huge images cost
memory: it validates the file, refuses formats and sizes it cannot decode safely,
uses reduced-size JPEG decoding, and reports the sizes along the way so every
detector's coordinates can be mapped back to source pixels. ``ArtworkError`` and
``Box`` are defined here, at the bottom of the package, so every step can use them
without importing the pipeline (``image`` re-exports both).
"""

from __future__ import annotations

import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from keyart.errors import KeyartError

SUPPORTED_FORMATS: frozenset[str] = frozenset({"JPEG", "PNG", "WEBP", "MPO"})
MAX_FULL_DECODE_PIXELS = 250_000_000  # non-JPEG full decode limit (~1 GB as RGBX)

_PIL_LOCK = threading.Lock()

Box = tuple[int, int, int, int]  # x, y, w, h in source pixels


class ArtworkError(KeyartError):
    """An image that cannot be analysed: unreadable, truncated, not an image, too big."""

    def __init__(self, path: Path | str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = Path(path)
        self.reason = reason

    def __reduce__(self) -> tuple[Any, ...]:  # picklable across processes
        return (ArtworkError, (self.path, self.reason))


@dataclass
class Loaded:
    """A decoded, EXIF-upright, downscaled RGB image and the sizes along the way."""

    rgb: np.ndarray  # H x W x 3 uint8, working size
    format: str
    width: int
    height: int
    decoded_width: int
    decoded_height: int


def _open(path: Path) -> Image.Image:
    # Pillow's decompression-bomb guard looks at the header size before we can ask
    # for a reduced JPEG decode, so it is lifted while opening; our own limit
    # (MAX_FULL_DECODE_PIXELS for formats decoded at full size) applies instead.
    with _PIL_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            return Image.open(path)
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def load_image(
    path: Path | str, max_side: int = 1600, max_full_decode_pixels: int = MAX_FULL_DECODE_PIXELS
) -> Loaded:
    """Decode ``path`` to an RGB array whose longer side is at most ``max_side``."""
    path = Path(path)
    if max_side < 32:
        raise ValueError("max_side must be >= 32")
    if not path.exists():
        raise ArtworkError(path, "no such file")
    if not path.is_file():
        raise ArtworkError(path, "not a regular file")
    if path.stat().st_size == 0:
        raise ArtworkError(path, "empty file")
    try:
        im = _open(path)
    except UnidentifiedImageError:
        raise ArtworkError(path, "not an image (unrecognised format)") from None
    except OSError as exc:
        raise ArtworkError(path, f"unreadable: {exc}") from None
    try:
        with im:
            fmt = (im.format or "").upper()
            if fmt not in SUPPORTED_FORMATS:
                raise ArtworkError(path, f"unsupported format {fmt or '?'} (JPEG, PNG, WebP only)")
            raw_w, raw_h = im.size
            if raw_w <= 0 or raw_h <= 0:
                raise ArtworkError(path, "zero-sized image")
            if fmt in ("JPEG", "MPO"):
                # DCT scaling: largest reduction that keeps the image >= max_side.
                scale = max(raw_w, raw_h) / max_side
                if scale > 1:
                    im.draft("RGB", (max(1, int(raw_w / scale)), max(1, int(raw_h / scale))))
            elif raw_w * raw_h > max_full_decode_pixels:
                raise ArtworkError(
                    path,
                    f"{raw_w}x{raw_h} {fmt} is too large to decode safely "
                    f"(> {max_full_decode_pixels / 1e6:.0f} MP; only JPEG decodes at reduced scale)",
                )
            try:
                im.load()
            except (OSError, SyntaxError, ValueError) as exc:
                raise ArtworkError(path, f"corrupt or truncated image data: {exc}") from None
            dec_w, dec_h = im.size
            orientation = im.getexif().get(0x0112, 1)
            up = ImageOps.exif_transpose(im) if orientation in (2, 3, 4, 5, 6, 7, 8) else im
            if up.mode not in ("RGB", "L"):
                if "A" in up.mode or up.mode == "P" and "transparency" in up.info:
                    rgba = up.convert("RGBA")
                    bg = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
                    up = Image.alpha_composite(bg, rgba).convert("RGB")
                else:
                    up = up.convert("RGB")
            if max(up.size) > max_side:
                up.thumbnail((max_side, max_side), Image.Resampling.BILINEAR, reducing_gap=2.0)
            arr = np.asarray(up.convert("RGB"))
    except ArtworkError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ArtworkError(path, f"cannot decode: {exc}") from None
    if orientation in (5, 6, 7, 8):
        raw_w, raw_h = raw_h, raw_w
        dec_w, dec_h = dec_h, dec_w
    return Loaded(np.ascontiguousarray(arr), fmt, raw_w, raw_h, dec_w, dec_h)


def _resize_max(img: np.ndarray, side: int) -> tuple[np.ndarray, float]:
    """Downscale so the longer side is <= side; returns (image, factor to multiply by)."""
    h, w = img.shape[:2]
    s = min(1.0, side / max(h, w))
    if s >= 1.0:
        return img, 1.0
    out = cv2.resize(
        img, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA
    )
    return out, s
