"""A decoded image in a working mode ("L", "F", "La") -> float32 gray [H, W] in [0, 1].

Transparent areas take the background's colour: when the visible pixels are one colour (strokes
drawn on a transparent canvas) the background is the opposite extreme, white behind dark ink and
black behind light ink; when they hold a picture (a scan with transparent margins) the background
is that picture's most common level, its paper.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

OPAQUE = 0.5  # alpha above which a pixel counts as visible
ONE_COLOUR_SPREAD = 0.25  # visible levels spread less than this (5th-95th percentile): strokes, not a picture


def alpha_background(level: np.ndarray, alpha: np.ndarray) -> float:
    """The level that transparent pixels take, from the visible pixels' levels (straight, not premultiplied)."""
    visible = level[alpha > OPAQUE]
    if visible.size == 0:
        return 0.0
    low, median, high = np.quantile(visible, [0.05, 0.5, 0.95])
    if high - low < ONE_COLOUR_SPREAD:
        return 0.0 if median > 0.5 else 1.0
    return float(median)


def to_gray(image: Image.Image) -> np.ndarray:
    """float32 [H, W] in [0, 1] from an image in mode "L", "F" or "La" (premultiplied gray and alpha)."""
    if image.mode == "F":
        return np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0)
    if image.mode == "L":
        return np.asarray(image, dtype=np.float32) / np.float32(255.0)
    if image.mode != "La":
        raise ValueError(f"to_gray expects mode L, F or La, not {image.mode}")
    pixels = np.asarray(image, dtype=np.float32) / np.float32(255.0)
    premultiplied, alpha = pixels[..., 0], pixels[..., 1]
    straight = np.divide(premultiplied, alpha, out=np.zeros_like(alpha), where=alpha > 0)
    background = alpha_background(straight, alpha)
    return np.clip(premultiplied + np.float32(background) * (1.0 - alpha), 0.0, 1.0)
