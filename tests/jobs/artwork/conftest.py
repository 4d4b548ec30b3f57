"""Real photographs from scikit-image's bundled data, written to temporary files."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data

from keyart.jobs.artwork.analysis import ImageAnalysis, analyze_image

# name -> file suffix; astronaut has one human face, the others none (chelsea is a cat)
PHOTOS = {"astronaut": ".png", "coffee": ".jpg", "rocket": ".jpg", "chelsea": ".png"}


def write_rgb(path: Path, rgb: np.ndarray) -> Path:
    """Write an RGB (or gray) array as an image file chosen by suffix."""
    bgr = (
        cv2.cvtColor(np.ascontiguousarray(rgb[..., :3]), cv2.COLOR_RGB2BGR)
        if rgb.ndim == 3
        else rgb
    )
    assert cv2.imwrite(str(path), bgr, [cv2.IMWRITE_JPEG_QUALITY, 92])
    return path


@pytest.fixture(scope="session", name="write_rgb")
def write_rgb_fixture():  # type: ignore[no-untyped-def]
    """The writer as a fixture: tests/conftest.py owns the `conftest` module name."""
    return write_rgb


@pytest.fixture(scope="session")
def photo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("photos")
    for name, suffix in PHOTOS.items():
        write_rgb(d / f"{name}{suffix}", getattr(skimage.data, name)())
    return d


@pytest.fixture(scope="session")
def photos(photo_dir: Path) -> dict[str, Path]:
    return {name: photo_dir / f"{name}{suffix}" for name, suffix in PHOTOS.items()}


@pytest.fixture(scope="session")
def analyses(photos: dict[str, Path]) -> dict[str, ImageAnalysis]:
    return {name: analyze_image(p) for name, p in photos.items()}
