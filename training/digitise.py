"""Augmentation that imitates how digits are digitised after they are written: resolution loss, blur,
sensor noise, and the contrast stretch the service's preprocessing applies.

Other devices and data sets record a digit coarser than MNIST's 28x28 grey scan (UCI's optdigits: 32x32
bitmaps counted into 8x8 blocks; a phone photo of a small digit; a fax or a 100 dpi scan), blur it (focus,
a soft pencil), and add noise that the preprocessing's stretch to the digit's brightest pixel amplifies.
Each transform takes float images [n, 28, 28] on the 0-255 scale and per-image draws, so the PyTorch and
TensorFlow trainers see the same distribution from the same seed. docs/training.md justifies the ranges.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    from training.augment import Augmentation

UPSCALERS = (Image.Resampling.BILINEAR, Image.Resampling.BICUBIC)  # how devices and viewers enlarge


def chosen(n: int, probability: float, rng: np.random.Generator) -> np.ndarray:
    """Indices of the images drawn for a transform applied with `probability`."""
    return np.nonzero(rng.random(n) < probability)[0]


def lose_resolution(images: np.ndarray, sides: np.ndarray, upscalers: np.ndarray) -> np.ndarray:
    """Each image averaged over blocks (Pillow's BOX: area-weighted, as counting ink in blocks is) to
    `sides[i]` x `sides[i]` px, then enlarged back to its size with UPSCALERS[upscalers[i]]."""
    out = np.empty_like(images)
    height, width = images.shape[1:]
    for index, (image, side, upscaler) in enumerate(zip(images, sides, upscalers)):
        small = Image.fromarray(image, mode="F").resize((int(side), int(side)), Image.Resampling.BOX)
        out[index] = np.asarray(small.resize((width, height), UPSCALERS[int(upscaler)]))
    return out


def gaussian_blur(images: np.ndarray, sigmas: np.ndarray) -> np.ndarray:
    """Each image blurred by a Gaussian of its own `sigmas[i]` px (black beyond the frame)."""
    from scipy import ndimage

    return np.stack([ndimage.gaussian_filter(image, sigma=float(sigma), mode="constant")
                     for image, sigma in zip(images, sigmas)]) if len(images) else images


def stretch_to_peak(images: np.ndarray) -> np.ndarray:
    """Scale each image so that its brightest pixel is 255, as the service's framing divides by the
    digit's brightest pixel: a blurred or coarse digit reaches the model at full contrast."""
    peak = images.max(axis=(1, 2), keepdims=True)
    return np.where(peak > 0, images * (255.0 / np.maximum(peak, 1e-6)), images)


def add_noise(images: np.ndarray, sigmas: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise of standard deviation `sigmas[i]` (on the [0, 1] scale), clipped to the 0-255 range."""
    noise = rng.normal(0.0, 1.0, images.shape).astype(np.float32) * (255.0 * sigmas[:, None, None]).astype(np.float32)
    return np.clip(images + noise, 0.0, 255.0)


def digitise(images: np.ndarray, aug: Augmentation, rng: np.random.Generator) -> np.ndarray:
    """Float images [n, h, w] (0-255) after a random digitisation: resolution loss and blur, each for its
    share of the images, stretched back to full contrast, then noise for its share."""
    out = images.astype(np.float32, copy=True)
    n = len(out)
    degraded = np.zeros(n, bool)
    if aug.low_resolution_probability > 0:
        picked = chosen(n, aug.low_resolution_probability, rng)
        sides = rng.integers(int(aug.low_resolution_min), int(aug.low_resolution_max) + 1, picked.size)
        out[picked] = lose_resolution(out[picked], sides, rng.integers(0, len(UPSCALERS), picked.size))
        degraded[picked] = True
    if aug.blur_probability > 0 and aug.blur_sigma > 0:
        picked = chosen(n, aug.blur_probability, rng)
        out[picked] = gaussian_blur(out[picked], rng.uniform(0.0, aug.blur_sigma, picked.size))
        degraded[picked] = True
    if degraded.any():
        out[degraded] = stretch_to_peak(out[degraded])
    if aug.noise_probability > 0 and aug.noise_sigma > 0:
        picked = chosen(n, aug.noise_probability, rng)
        out[picked] = add_noise(out[picked], rng.uniform(0.0, aug.noise_sigma, picked.size), rng)
    return out
