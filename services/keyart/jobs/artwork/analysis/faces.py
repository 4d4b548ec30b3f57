"""Frontal face detection with OpenCV's bundled Haar cascade.

Exists so the cascade's per-thread cache and detection parameters live in one
place; the cascade file ships inside the opencv wheel, nothing is downloaded.
"""

from __future__ import annotations

import threading
from pathlib import Path

import cv2
import numpy as np

from keyart.jobs.artwork.analysis.decode import Box, _resize_max

DETECT_MAX_SIDE = 800  # face detection image size (faces below ~20 px here are missed)

_FACE_CASCADE_FILE = "haarcascade_frontalface_alt2.xml"
_local = threading.local()


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
