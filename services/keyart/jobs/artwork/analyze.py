"""Measure one artwork image: faces, focal point, colour, text.

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

import threading
import time
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from keyart.domain import PALETTES
from keyart.errors import KeyartError

# ---------------------------------------------------------------------------
# Tunables (module constants so tests and callers can read them)

IMAGE_SUFFIXES: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".webp"})
SUPPORTED_FORMATS: frozenset[str] = frozenset({"JPEG", "PNG", "WEBP", "MPO"})
DETECT_MAX_SIDE = 800  # face detection image size (faces below ~20 px here are missed)
TEXT_MAX_SIDE = 1000  # text (MSER) detection image size
COLOUR_MAX_SIDE = 256  # brightness / warmth / contrast / palette
SALIENCY_SIDE = 64  # spectral residual works on a tiny image by design
MAX_FULL_DECODE_PIXELS = 250_000_000  # non-JPEG full decode limit (~1 GB as RGBX)

# Style from the largest face's share of the frame (Haar boxes are tight: brows to
# mouth, so a head-and-shoulders close-up is ~0.10 and a waist-up portrait ~0.03).
CLOSEUP_FACE_AREA = 0.10
CHARACTER_FACE_AREA = 0.015
ENSEMBLE_MIN_FACES = 3

_FACE_CASCADE_FILE = "haarcascade_frontalface_alt2.xml"
_PIL_LOCK = threading.Lock()
_local = threading.local()

Box = tuple[int, int, int, int]  # x, y, w, h in source pixels


class ArtworkError(KeyartError):
    """An image that cannot be analysed: unreadable, truncated, not an image, too big."""

    def __init__(self, path: Path | str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = Path(path)
        self.reason = reason

    def __reduce__(self) -> tuple[Any, ...]:  # picklable across processes
        return (ArtworkError, (self.path, self.reason))


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


# ---------------------------------------------------------------------------
# Decoding


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


# ---------------------------------------------------------------------------
# Faces


def _face_cascade() -> cv2.CascadeClassifier:
    casc = getattr(_local, "face", None)  # CascadeClassifier is not thread-safe
    if casc is None:
        path = Path(cv2.data.haarcascades) / _FACE_CASCADE_FILE  # type: ignore[attr-defined]
        casc = cv2.CascadeClassifier(str(path))
        if casc.empty():
            raise RuntimeError(
                f"cannot load face cascade {path}; is opencv-python-headless 4.x installed?"
            )
        _local.face = casc
    return casc


def detect_faces(gray: np.ndarray) -> list[Box]:
    """Frontal faces in a grayscale image (its own pixel coords), largest first."""
    small, s = _resize_max(gray, DETECT_MAX_SIDE)
    # No histogram equalisation: Haar windows are variance-normalised already, and a
    # global equalisation lets large flat areas (sky, backdrops) wash faces out.
    min_side = max(20, int(0.025 * min(small.shape[:2])))
    found = _face_cascade().detectMultiScale(
        small, scaleFactor=1.1, minNeighbors=5, minSize=(min_side, min_side)
    )
    boxes = [
        (round(x / s), round(y / s), round(w / s), round(h / s))
        for (x, y, w, h) in (found if len(found) else [])
    ]
    boxes.sort(key=lambda b: b[2] * b[3], reverse=True)
    return boxes


# ---------------------------------------------------------------------------
# Focal point


def saliency_map(gray: np.ndarray) -> np.ndarray:
    """Spectral residual saliency (Hou & Zhang 2007) at SALIENCY_SIDE, values 0..1."""
    h, w = gray.shape[:2]
    s = SALIENCY_SIDE / max(h, w)
    small = cv2.resize(
        gray, (max(8, round(w * s)), max(8, round(h * s))), interpolation=cv2.INTER_AREA
    )
    f = np.fft.fft2(small.astype(np.float32) / 255.0)
    log_amp = np.log(np.abs(f) + 1e-8)
    phase = np.angle(f)
    residual = log_amp - cv2.blur(log_amp.astype(np.float32), (3, 3))
    sal = np.abs(np.fft.ifft2(np.exp(residual + 1j * phase))) ** 2
    sal = cv2.GaussianBlur(sal.astype(np.float32), (0, 0), 2.5)
    sal -= sal.min()
    return sal / (sal.max() + 1e-12)


def saliency_focal(gray: np.ndarray) -> tuple[float, float]:
    """Centroid of the most salient 5% of the image, in the gray image's coords.

    The map is weighted by a broad centre prior (photographers frame subjects away
    from the edges), which keeps small bright specks at the border from winning.
    """
    sal = saliency_map(gray)
    hh, ww = sal.shape
    yy, xx = np.mgrid[0:hh, 0:ww]
    prior = np.exp(-(((xx + 0.5) / ww - 0.5) ** 2 + ((yy + 0.5) / hh - 0.5) ** 2) / (2 * 0.3**2))
    sal = sal * (0.4 + 0.6 * prior)
    thr = np.quantile(sal, 0.95)
    wts = np.where(sal >= thr, sal, 0.0)
    if wts.sum() <= 0:
        return gray.shape[1] / 2, gray.shape[0] / 2
    ys, xs = np.mgrid[0 : sal.shape[0], 0 : sal.shape[1]]
    cx = float((xs * wts).sum() / wts.sum() + 0.5) * gray.shape[1] / sal.shape[1]
    cy = float((ys * wts).sum() / wts.sum() + 0.5) * gray.shape[0] / sal.shape[0]
    return cx, cy


# ---------------------------------------------------------------------------
# Colour

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


# ---------------------------------------------------------------------------
# Text


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


# ---------------------------------------------------------------------------
# Public API


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
