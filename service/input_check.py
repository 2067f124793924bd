"""Honest input: what MNIST-style preprocessing did to an image (the ink found, the box cropped, the
scaling to 20 px, the centre-of-mass shift), and whether the input looks like a digit at all.

The steps are service.imaging's own (mnist_style = frame_digit(select_digit(ink_map(...))), with
frame_steps giving the framing's geometry); a test checks that they give mnist_style's input.

The warnings and their thresholds were measured on 1,000 MNIST test digits drawn at the pad's
size and 2,400 generated non-digits (python -m tests.measure_input_check; docs/page.md has the
table): each shape test fires on at most 0.2 % of MNIST digits, the confidence test on 1.5 %.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from service.imaging.mnist_style import INK_THRESHOLD, frame_steps, to_working_size
from service.imaging.morphology import label, min_filter
from service.imaging.photo import ink_map, select_digit

STROKE = 0.5  # a pixel of the 28x28 input brighter than this is ink, for the shape tests
SOLID_WINDOW = 5  # ink whose whole 5x5 neighbourhood is ink lies 2 px or more inside a stroke
SOLID_SHARE = 0.2  # MNIST: 99.9th percentile 0.19 (handwriting is 2-3 px wide); filled blobs 0.46 (median)
MAX_PIECES = 4  # MNIST: 99.9th percentile 4 separate pieces
UNSURE = 0.8  # top probability; MNIST: 1.5 % of test digits below it (cnn-pytorch v2; v1 1.1 %), scribbles 37 %


@dataclass(frozen=True)
class Framing:
    """The preprocessing of one image; coordinates of the working image (`working_shape`)."""

    source_shape: tuple[int, int]  # the decoded image, rows x columns
    working_shape: tuple[int, int]  # after the reduction to at most WORKING_SIDE
    uneven_light: bool
    ink: np.ndarray  # the digit's ink in the working image, 0 elsewhere
    crop: tuple[int, int, int, int] | None  # top, left, bottom, right (inclusive); None: no ink
    scale: float  # the crop's longer side -> 20 px
    placed: tuple[int, int, int, int]  # top, left, height, width of the scaled digit in 28x28
    centre_of_mass: tuple[float, float]  # before the shift, in 28x28
    shift: tuple[int, int]  # rows, columns
    input: np.ndarray  # [28, 28]


def frame(gray: np.ndarray) -> Framing:
    """[H, W] gray in [0, 1] -> the 28x28 input mnist_style gives, with every step's geometry."""
    working = to_working_size(gray)
    ink, uneven = ink_map(working)
    digit = select_digit(ink, cut_frame_bands=uneven)
    steps = frame_steps(digit)
    return Framing((gray.shape[0], gray.shape[1]), (working.shape[0], working.shape[1]), uneven, digit, steps.crop,
                   steps.scale, steps.placed, steps.centre_of_mass, steps.shift, steps.input)


def unprocessed(image: np.ndarray) -> Framing:
    """A 28x28 input sent without preprocessing: no steps, the image is the input."""
    side = image.shape[0]
    return Framing((side, side), (side, side), False, image, None, 0.0, (0, 0, 0, 0), ((side - 1) / 2, (side - 1) / 2),
                   (0, 0), image)


def thumbnail(ink: np.ndarray, side: int) -> np.ndarray:
    """The ink map reduced (box filter) to at most `side` pixels on its longer side, in [0, 1]."""
    peak = max(float(ink.max()), 1e-12)
    height, width = ink.shape
    ratio = min(1.0, side / max(height, width))
    size = (max(1, round(width * ratio)), max(1, round(height * ratio)))
    return np.clip(np.asarray(Image.fromarray((ink / peak).astype(np.float32), "F").resize(size, Image.Resampling.BOX)), 0, 1)


@dataclass(frozen=True)
class Measures:
    ink: float  # mean of the 28x28 input
    solid_share: float  # of the ink pixels, those 2 px or more inside a stroke
    pieces: int  # 8-connected pieces of ink
    touches_every_border: bool  # the digit's ink reaches all four edges of the image
    top_probability: float


@dataclass(frozen=True)
class InputWarning:
    code: str
    message: str


def measure(framing: Framing, probabilities: np.ndarray) -> Measures:
    strokes = framing.input > STROKE
    count = int(strokes.sum())
    inside = min_filter(strokes.astype(np.float32), SOLID_WINDOW) > 0.5
    solid = float(inside.sum() / count) if count else 0.0
    pieces = label(strokes)[1] if count else 0
    digit = framing.ink > INK_THRESHOLD * max(float(framing.ink.max()), 1e-12)
    touches = bool(digit[0].any() and digit[-1].any() and digit[:, 0].any() and digit[:, -1].any()) if digit.any() else False
    return Measures(float(framing.input.mean()), solid, int(pieces), touches, float(np.max(probabilities)))


def warnings(found: Measures) -> list[InputWarning]:
    if found.ink == 0.0:
        return [InputWarning("blank", "No ink found: the input is blank, so the prediction means nothing.")]
    result = []
    if found.touches_every_border:
        result.append(InputWarning("touches_every_border", "The ink reaches all four edges of the image: this is not one "
                                                      "digit on a background, or it is cropped too tightly."))
    if found.solid_share > SOLID_SHARE:
        result.append(InputWarning("solid", f"The strokes are much thicker than handwriting ({found.solid_share:.0%} of the "
                                       "ink is 2 px inside a stroke; digits: under 20 %): a filled shape?"))
    if found.pieces > MAX_PIECES:
        result.append(InputWarning("pieces", f"The ink is in {found.pieces} separate pieces (a digit has at most "
                                        f"{MAX_PIECES}): scattered marks?"))
    if found.top_probability < UNSURE:
        result.append(InputWarning("unsure", f"The model is unsure (top probability {found.top_probability:.0%}; 1-2 % "
                                        "of MNIST digits score below 80 %): this may not be a digit it knows."))
    return result
