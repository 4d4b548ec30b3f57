"""Artwork analysis: measure images (faces, focal point, colour, text), crop them for
every screen, place badges away from faces and text, and draw contact sheets."""

from keyart.jobs.artwork.analysis import (
    ArtworkError,
    ImageAnalysis,
    analyze_image,
    analyze_paths,
    to_image_row,
)

__all__ = ["ArtworkError", "ImageAnalysis", "analyze_image", "analyze_paths", "to_image_row"]
