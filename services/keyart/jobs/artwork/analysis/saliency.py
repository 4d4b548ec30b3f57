"""Focal point of an image without faces: spectral residual saliency.

Exists to give crops a subject to keep when no face is found.
"""

from __future__ import annotations

import cv2
import numpy as np

SALIENCY_SIDE = 64  # spectral residual works on a tiny image by design


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
