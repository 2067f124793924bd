"""Augmentation that imitates how people write and how digits get digitised, shared by both trainers.

Writing: each training image gets its own random rotation, scale, width (aspect), shear and shift (one
affine map about the image centre), a stroke-width change (grey-level dilations or erosions, the last
one fractional) and, with some probability, an elastic distortion (Simard, Steinkraus and Platt,
ICDAR 2003: a uniform random displacement field smoothed by a Gaussian of width `elastic_sigma`,
scaled by `elastic_alpha`). Digitising (training/digitise.py), each for its share of the images:
resolution loss, blur and sensor noise.
Everything is batched numpy/scipy on uint8 [n, 28, 28] arrays, so the PyTorch and the TensorFlow
trainers see the same distribution from the same seed. docs/training.md justifies the ranges.
scipy (the `train` extra) is imported where it is used: the CLI reads the presets in a serving install.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

CHUNK = 4096  # images warped at once: bounds the float32 coordinate arrays to about 40 MB
CROSS = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], dtype=bool)  # 4-neighbourhood: 1 px a side


@dataclass(frozen=True)
class Augmentation:
    """Ranges of the random transforms; 0 turns a transform off. Each is drawn uniformly per image."""

    shift: float = 2.0  # px, each axis in [-shift, shift]
    rotation: float = 0.0  # degrees, in [-rotation, rotation]
    scale: float = 0.0  # relative: factor in [1 - scale, 1 + scale]
    aspect: float = 0.0  # relative width: x factor in [1 / (1 + aspect), 1 + aspect], log-uniform
    shear: float = 0.0  # horizontal shear x += k * y, k in [-shear, shear] (slant)
    stroke_thin: float = 0.0  # px of stroke width: the change is drawn in [-stroke_thin, stroke_thick]
    stroke_thick: float = 0.0
    elastic_alpha: float = 0.0  # px, scale of the smoothed displacement field
    elastic_sigma: float = 4.0  # px, Gaussian smoothing of the field
    elastic_probability: float = 0.0  # fraction of images distorted elastically
    low_resolution_probability: float = 0.0  # fraction of images reduced and enlarged back
    low_resolution_min: float = 7.0  # px: the 28x28 image is reduced to a side drawn in [min, max]
    low_resolution_max: float = 16.0
    blur_probability: float = 0.0  # fraction of images blurred
    blur_sigma: float = 0.0  # px: Gaussian sigma drawn in [0, blur_sigma]
    noise_probability: float = 0.0  # fraction of images with sensor noise
    noise_sigma: float = 0.0  # on the [0, 1] scale: standard deviation drawn in [0, noise_sigma]

    def public(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def shift_only(self) -> bool:
        return not (self.rotation or self.scale or self.aspect or self.shear or self.stroke_thin or self.stroke_thick
                    or self.elastic_on or self.digitised)

    @property
    def digitised(self) -> bool:
        return (self.low_resolution_probability > 0 or (self.blur_probability > 0 and self.blur_sigma > 0)
                or (self.noise_probability > 0 and self.noise_sigma > 0))

    def problem(self) -> tuple[str, str] | None:
        """(field, why) for the first range that cannot be drawn from, or None."""
        for name, value in self.public().items():
            if value < 0:
                return name, "must not be negative"
            if name.endswith("probability") and value > 1:
                return name, "is a fraction of the images: at most 1"
        if not 2 <= self.low_resolution_min <= self.low_resolution_max <= 28:
            field = "low_resolution_min" if self.low_resolution_min < 2 or self.low_resolution_min > self.low_resolution_max \
                else "low_resolution_max"
            return field, (f"the coarse grid's side is drawn in [min, max] with 2 <= min <= max <= 28 "
                           f"(min {self.low_resolution_min:g}, max {self.low_resolution_max:g})")
        return None

    @property
    def elastic_on(self) -> bool:
        return self.elastic_alpha > 0 and self.elastic_probability > 0


SHIFT_ONLY = Augmentation(shift=2)
HANDWRITING = Augmentation(shift=2, rotation=12, scale=0.12, shear=0.25, stroke_thin=1.0, stroke_thick=1.0,
                           elastic_alpha=34, elastic_sigma=5, elastic_probability=0.5)
DEVICES = Augmentation(shift=2, rotation=12, scale=0.12, aspect=0.25, shear=0.25, stroke_thin=1.0, stroke_thick=3.0,
                       elastic_alpha=34, elastic_sigma=5, elastic_probability=0.5,
                       low_resolution_probability=0.35, low_resolution_min=8, low_resolution_max=16,
                       blur_probability=0.2, blur_sigma=1.5, noise_probability=0.2, noise_sigma=0.25)
NONE = Augmentation(shift=0)
AUGMENTATION_RANGES = tuple(field.name for field in fields(Augmentation))
PRESETS: dict[str, Augmentation] = {"devices": DEVICES, "handwriting": HANDWRITING, "shift": SHIFT_ONLY, "none": NONE}


def random_shift(images: np.ndarray, max_shift: int, rng: np.random.Generator) -> np.ndarray:
    """Shift each image by a whole number of pixels, up to `max_shift` in x and y, filling with black."""
    if max_shift <= 0:
        return images
    n = len(images)
    padded = np.pad(images, ((0, 0), (max_shift, max_shift), (max_shift, max_shift)))
    dy = rng.integers(-max_shift, max_shift + 1, n)
    dx = rng.integers(-max_shift, max_shift + 1, n)
    out = np.empty_like(images)
    size = images.shape[1]
    for y in range(-max_shift, max_shift + 1):
        for x in range(-max_shift, max_shift + 1):
            idx = np.nonzero((dy == y) & (dx == x))[0]
            if idx.size:
                top, left = max_shift - y, max_shift - x
                out[idx] = padded[idx, top : top + size, left : left + size]
    return out


def change_stroke(images: np.ndarray, width_change: np.ndarray) -> np.ndarray:
    """Widen (positive) or thin (negative) the strokes of float images [n, h, w] by about
    `width_change` px: whole 4-neighbourhood grey dilations (+2 px each) or erosions (-2 px), then a
    blend towards one more for the remainder."""
    from scipy import ndimage

    out = images.copy()
    footprint = CROSS[None]
    remaining = np.abs(width_change).astype(np.float32)
    for sign, morphology in ((1, ndimage.grey_dilation), (-1, ndimage.grey_erosion)):
        left = np.where(np.sign(width_change) == sign, remaining, 0.0)
        while (picked := left > 0).any():
            part = out[picked]
            fraction = np.minimum(left[picked] / 2.0, 1.0)[:, None, None]
            out[picked] = part + fraction * (morphology(part, footprint=footprint) - part)
            left[picked] -= 2.0
    return out


def affine_inverse(angle_deg: np.ndarray, factor: np.ndarray, shear: np.ndarray,
                   width: np.ndarray | None = None) -> np.ndarray:
    """Per image, the 2x2 map from output to source coordinates (y, x) about the centre, of the
    forward map: rotate by `angle_deg`, shear x by `shear` * y, scale by `factor`, then scale x
    alone by `width` (1 when not given)."""
    angle = np.deg2rad(angle_deg)
    cos, sin = np.cos(angle), np.sin(angle)
    forward = np.empty((len(angle), 2, 2))
    forward[:, 0, 0], forward[:, 0, 1] = cos * factor, sin * factor
    forward[:, 1, 0], forward[:, 1, 1] = (-sin + shear * cos) * factor, (cos + shear * sin) * factor
    if width is not None:
        forward[:, 1] *= width[:, None]
    return np.linalg.inv(forward)


def elastic_fields(n: int, size: int, aug: Augmentation, rng: np.random.Generator) -> np.ndarray:
    """Simard's displacement fields [n, 2, size, size] in px; zero for images not drawn for it."""
    from scipy import ndimage

    fields = np.zeros((n, 2, size, size), dtype=np.float32)
    chosen = np.nonzero(rng.random(n) < aug.elastic_probability)[0]
    if chosen.size:
        noise = rng.uniform(-1, 1, (chosen.size, 2, size, size)).astype(np.float32)
        smooth = ndimage.gaussian_filter(noise, sigma=(0, 0, aug.elastic_sigma, aug.elastic_sigma), mode="constant", truncate=3.0)
        fields[chosen] = aug.elastic_alpha * smooth
    return fields


def bilinear_sample(images: np.ndarray, src_y: np.ndarray, src_x: np.ndarray) -> np.ndarray:
    """images [n, h, w] sampled at per-pixel source coordinates [n, h, w]; black outside."""
    from scipy import ndimage

    index = np.broadcast_to(np.arange(len(images), dtype=np.float32)[:, None, None], src_y.shape)
    return ndimage.map_coordinates(images, np.stack([index, src_y, src_x]), order=1, mode="grid-constant", cval=0.0)


def warp(images: np.ndarray, inverse: np.ndarray, shift: np.ndarray, fields: np.ndarray | None = None) -> np.ndarray:
    """Float images [n, h, w] under per-image affine maps (`inverse` from affine_inverse, `shift` [n, 2]
    in px) plus optional displacement fields [n, 2, h, w], sampled bilinearly."""
    size = images.shape[1]
    centre = (size - 1) / 2.0
    axis = np.arange(size, dtype=np.float32) - centre
    grid_y, grid_x = np.meshgrid(axis, axis, indexing="ij")
    out_y = grid_y[None] - shift[:, 0, None, None]
    out_x = grid_x[None] - shift[:, 1, None, None]
    src_y = inverse[:, 0, 0, None, None] * out_y + inverse[:, 0, 1, None, None] * out_x + centre
    src_x = inverse[:, 1, 0, None, None] * out_y + inverse[:, 1, 1, None, None] * out_x + centre
    if fields is not None:
        src_y, src_x = src_y + fields[:, 0], src_x + fields[:, 1]
    return bilinear_sample(images, src_y.astype(np.float32), src_x.astype(np.float32))


def random_warp(images: np.ndarray, aug: Augmentation, rng: np.random.Generator) -> np.ndarray:
    """uint8 [n, h, w] -> float: a random stroke change, then a random affine map plus elastic field."""
    n, size, _ = images.shape
    work = images.astype(np.float32)
    if aug.stroke_thin or aug.stroke_thick:
        work = change_stroke(work, rng.uniform(-aug.stroke_thin, aug.stroke_thick, n))
    width = np.exp(rng.uniform(-np.log1p(aug.aspect), np.log1p(aug.aspect), n)) if aug.aspect else None
    inverse = affine_inverse(rng.uniform(-aug.rotation, aug.rotation, n), rng.uniform(1 - aug.scale, 1 + aug.scale, n),
                             rng.uniform(-aug.shear, aug.shear, n), width)
    shift = rng.uniform(-aug.shift, aug.shift, (n, 2))
    fields = elastic_fields(n, size, aug, rng) if aug.elastic_on else None
    return warp(work, inverse, shift, fields)


def to_uint8(images: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(images), 0, 255).astype(np.uint8)


def augment(images: np.ndarray, aug: Augmentation, rng: np.random.Generator) -> np.ndarray:
    """A freshly augmented copy of uint8 images [n, 28, 28] (the input is left as it is)."""
    if aug.shift_only:
        return random_shift(images, int(round(aug.shift)), rng)
    from training.digitise import digitise

    out = np.empty_like(images)
    for start in range(0, len(images), CHUNK):
        written = random_warp(images[start : start + CHUNK], aug, rng)
        out[start : start + CHUNK] = to_uint8(digitise(written, aug, rng) if aug.digitised else written)
    return out
