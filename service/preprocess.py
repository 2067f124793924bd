"""Users' images -> MNIST-style 28x28 inputs: the entry points the protocol layer calls.

Decoding, photo cleanup and framing live in service.imaging; docs/images.md describes each step
and its limits.
"""

from __future__ import annotations

import numpy as np

from service.imaging.decode import ALLOWED_FORMATS, ALLOWED_NAMES, ImageInfo, decode_image, probe_image
from service.imaging.gray import to_gray
from service.imaging.mnist_style import SIZE, WORKING_SIDE, mnist_style

__all__ = ["ALLOWED_FORMATS", "ALLOWED_NAMES", "SIZE", "ImageInfo", "decode_image", "image_to_input", "mnist_style",
           "probe_image", "to_gray"]


def image_to_input(data: bytes, max_pixels: int, preprocess: bool, where: str = "image") -> np.ndarray:
    """An encoded image -> [28, 28] float32 in [0, 1]. Without preprocessing the file must be 28x28
    (checked from its header, before decoding)."""
    if preprocess:
        return mnist_style(to_gray(decode_image(data, max_pixels, where, working_side=WORKING_SIDE)))
    return to_gray(decode_image(data, max_pixels, where, exact_side=SIZE))
