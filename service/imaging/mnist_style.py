"""Any gray image of a digit -> a 28x28 input framed the way the MNIST set was made.

The ink (service.imaging.photo: polarity, background, the digit's components) is cropped to its
box, the box's longer side scaled to 20 px keeping the aspect ratio, pasted into 28x28 and moved
so that its centre of mass is at the centre.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from service.imaging.photo import ink_map, select_digit

SIZE = 28
DIGIT_BOX = 20
INK_THRESHOLD = 0.2  # fraction of the digit's brightest pixel that counts as ink when cropping
WORKING_SIDE = 512  # bigger images are reduced to this longer side first: bounds the cost of a big photo


def to_working_size(gray: np.ndarray, working_side: int = WORKING_SIDE) -> np.ndarray:
    """Reduce (box filter) so that the longer side is at most `working_side`."""
    height, width = gray.shape
    if max(height, width) <= working_side:
        return gray
    ratio = working_side / max(height, width)
    size = (max(1, round(width * ratio)), max(1, round(height * ratio)))
    return np.asarray(Image.fromarray(gray.astype(np.float32), "F").resize(size, Image.Resampling.BOX))


@dataclass(frozen=True)
class Framing:
    """The framing's steps (the page shows them): the ink's box, its scaling, where it was pasted,
    its centre of mass there and the shift that centred it."""

    input: np.ndarray  # [28, 28]
    crop: tuple[int, int, int, int] | None = None  # top, left, bottom, right (inclusive) of the ink; None: no ink
    scale: float = 0.0  # the box's longer side -> DIGIT_BOX
    placed: tuple[int, int, int, int] = (0, 0, 0, 0)  # top, left, height, width of the scaled ink in 28x28
    centre_of_mass: tuple[float, float] = ((SIZE - 1) / 2, (SIZE - 1) / 2)  # before the shift
    shift: tuple[int, int] = (0, 0)  # rows, columns


def frame_steps(ink: np.ndarray) -> Framing:
    """Ink (bright on 0) -> [28, 28], with each step's geometry: crop, longer side to 20 px,
    centre of mass at the centre."""
    peak = float(ink.max())
    if peak <= 0.0:
        return Framing(np.zeros((SIZE, SIZE), np.float32))
    rows = np.nonzero((ink > INK_THRESHOLD * peak).any(axis=1))[0]
    cols = np.nonzero((ink > INK_THRESHOLD * peak).any(axis=0))[0]
    cropped = ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1] / peak
    height, width = cropped.shape
    scale = DIGIT_BOX / max(height, width)
    new_size = (max(1, round(width * scale)), max(1, round(height * scale)))
    resized = np.asarray(Image.fromarray(cropped.astype(np.float32), mode="F").resize(new_size, Image.Resampling.LANCZOS))
    resized = np.clip(resized, 0.0, 1.0)
    canvas = np.zeros((SIZE, SIZE), np.float32)
    top, left = (SIZE - resized.shape[0]) // 2, (SIZE - resized.shape[1]) // 2
    canvas[top : top + resized.shape[0], left : left + resized.shape[1]] = resized
    centre, shift = _centre_of_mass_shift(canvas)
    return Framing(np.roll(canvas, shift, axis=(0, 1)), (int(rows[0]), int(cols[0]), int(rows[-1]), int(cols[-1])),
                   scale, (top, left, resized.shape[0], resized.shape[1]), centre, shift)


def frame_digit(ink: np.ndarray) -> np.ndarray:
    """Ink (bright on 0) -> [28, 28]: crop, longer side to 20 px, centre of mass at the centre."""
    return frame_steps(ink).input


def _centre_of_mass_shift(canvas: np.ndarray) -> tuple[tuple[float, float], tuple[int, int]]:
    """The canvas's centre of mass, and the (rows, columns) roll that brings it to the centre."""
    total = float(canvas.sum())
    if total <= 0:
        return ((SIZE - 1) / 2, (SIZE - 1) / 2), (0, 0)
    ys, xs = np.indices(canvas.shape)
    cy, cx = float((ys * canvas).sum() / total), float((xs * canvas).sum() / total)
    dy, dx = int(round((SIZE - 1) / 2 - cy)), int(round((SIZE - 1) / 2 - cx))
    rows, cols = np.nonzero(canvas)
    # keep the whole digit inside the frame
    dy = int(np.clip(dy, -rows.min(), SIZE - 1 - rows.max()))
    dx = int(np.clip(dx, -cols.min(), SIZE - 1 - cols.max()))
    return (cy, cx), (dy, dx)


def mnist_style(gray: np.ndarray) -> np.ndarray:
    """[H, W] floats in [0, 1], any size, polarity and lighting -> [28, 28] white-on-black, centred."""
    ink, uneven = ink_map(to_working_size(gray))
    return frame_digit(select_digit(ink, cut_frame_bands=uneven))
