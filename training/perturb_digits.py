"""MNIST test digits, perturbed the way pens, writers and cameras change them: rotation, size, stroke
width, sensor noise and blur, each at a fixed severity.

Each perturbation takes MNIST digits (uint8 [n, 28, 28], white on black) and a seeded generator and
returns the model's input (float32 [n, 28, 28] in [0, 1]) directly, without the service's
preprocessing: these measure the model. training/perturb_photos.py makes whole image files instead,
which go through the service's preprocessing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from training.augment import affine_inverse, change_stroke, warp

Perturb = Callable[[np.ndarray, np.random.Generator], np.ndarray]


@dataclass(frozen=True)
class DigitPerturbation:
    name: str  # table row, e.g. "rotation 30°"
    kind: str  # rotation, scale, stroke, noise, blur
    severity: float
    perturb: Perturb

    @property
    def description(self) -> str:
        return DESCRIPTIONS[self.kind]


def _affine(images: np.ndarray, angle: np.ndarray, factor: float) -> np.ndarray:
    n = len(images)
    inverse = affine_inverse(angle, np.full(n, factor), np.zeros(n))
    return warp(images.astype(np.float32), inverse, np.zeros((n, 2))) / 255.0


def rotation(degrees: float) -> Perturb:
    """Turned by `degrees`, clockwise or anticlockwise at random, about the image centre."""
    def perturb(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return _affine(images, rng.choice([-degrees, degrees], len(images)), 1.0)
    return perturb


def scale(factor: float) -> Perturb:
    """Resized by `factor` about the image centre (MNIST's digits fill a 20 px box)."""
    def perturb(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return _affine(images, np.zeros(len(images)), factor)
    return perturb


def stroke(pixels: float) -> Perturb:
    """Strokes widened (positive) or thinned (negative) by `pixels`: whole 4-neighbourhood dilations or
    erosions (2 px each), the remainder as augment.change_stroke's fractional step."""
    def perturb(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        work = images.astype(np.float32)
        remaining = pixels
        while abs(remaining) > 1e-9:
            step = float(np.clip(remaining, -2.0, 2.0))
            work = change_stroke(work, np.full(len(work), step))
            remaining -= step
        return np.clip(work / 255.0, 0.0, 1.0)
    return perturb


def noise(sigma: float) -> Perturb:
    """Gaussian noise of standard deviation `sigma` (on the [0, 1] scale), clipped to [0, 1]."""
    def perturb(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        noisy = images.astype(np.float32) / 255.0 + rng.normal(0.0, sigma, images.shape).astype(np.float32)
        return np.clip(noisy, 0.0, 1.0)
    return perturb


def blur(sigma: float) -> Perturb:
    """A Gaussian blur of `sigma` px (an out-of-focus camera, a soft pencil)."""
    def perturb(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        from scipy import ndimage

        return ndimage.gaussian_filter(images.astype(np.float32) / 255.0, sigma=(0, sigma, sigma), mode="constant")
    return perturb


DESCRIPTIONS = {
    "rotation": "turned about the image centre, clockwise or anticlockwise at random",
    "scale": "resized about the image centre (MNIST's digits fill a 20 px box)",
    "stroke": "strokes thinned or widened by grey-level erosion or dilation",
    "noise": "Gaussian noise on the [0, 1] scale, clipped",
    "blur": "Gaussian blur",
}
PERTURBATIONS: tuple[DigitPerturbation, ...] = (
    DigitPerturbation("rotation 15°", "rotation", 15, rotation(15)),
    DigitPerturbation("rotation 30°", "rotation", 30, rotation(30)),
    DigitPerturbation("rotation 45°", "rotation", 45, rotation(45)),
    DigitPerturbation("scale 0.6", "scale", 0.6, scale(0.6)),
    DigitPerturbation("scale 0.8", "scale", 0.8, scale(0.8)),
    DigitPerturbation("scale 1.2", "scale", 1.2, scale(1.2)),
    DigitPerturbation("stroke -1 px", "stroke", -1, stroke(-1)),
    DigitPerturbation("stroke +2 px", "stroke", 2, stroke(2)),
    DigitPerturbation("stroke +4 px", "stroke", 4, stroke(4)),
    DigitPerturbation("noise σ 0.2", "noise", 0.2, noise(0.2)),
    DigitPerturbation("noise σ 0.4", "noise", 0.4, noise(0.4)),
    DigitPerturbation("blur σ 1 px", "blur", 1.0, blur(1.0)),
    DigitPerturbation("blur σ 2 px", "blur", 2.0, blur(2.0)),
)
