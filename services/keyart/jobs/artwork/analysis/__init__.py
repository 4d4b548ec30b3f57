"""Measure artwork images: faces, focal point, colour, text.

A package so each step (decode, faces, saliency, colour, text) is its own module;
the pipeline and its public API live in ``image`` and are re-exported here.
"""

from keyart.jobs.artwork.analysis.decode import Loaded, load_image
from keyart.jobs.artwork.analysis.image import (
    ArtworkError,
    Box,
    ImageAnalysis,
    analyze_image,
    analyze_paths,
    expand_paths,
    style_for,
    to_image_row,
)

__all__ = [
    "ArtworkError",
    "Box",
    "ImageAnalysis",
    "Loaded",
    "analyze_image",
    "analyze_paths",
    "expand_paths",
    "load_image",
    "style_for",
    "to_image_row",
]
