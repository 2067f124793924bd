"""MNIST test digits -> the image files people actually send: photos and scans of ink on paper.

Each generator takes MNIST digits (uint8 [n, 28, 28], white on black) and a seed, and returns one
encoded file (bytes) per digit, in the digits' order, so `labels` still apply:

| name | what the file is |
|---|---|
| `scan` | dark ink on light paper, the digit 1.5-14x its MNIST size, off centre on a larger sheet, a colour JPEG (quality 70-95) |
| `shaded` | the same on paper lit unevenly: a smooth gradient (linear, plus a vignette) down to 45-70 % of the light |
| `shadow` | the same with a soft-edged shadow across one side (35-60 % of the light), which may cross the digit |
| `exif` | a phone JPEG: the pixels stored rotated, EXIF Orientation 6, 3 or 8 saying how to show them |
| `png16` | a 16-bit grayscale PNG scan, levels spread over the 16-bit range (convert("L") clips it) |
| `float_tiff` | a 32-bit float TIFF in [0, 1], white on black or dark on light |

The image model is reflectance times illumination: paper and ink reflect their own colour, the
light falling on the sheet multiplies both, and the camera adds noise before JPEG compression.
Illumination and noise are vectorised numpy; resizing and encoding are Pillow's C code, so 1,000
files take a few seconds.

    from training.perturb_photos import generate
    files = generate("shadow", digits, seed=0)  # list[bytes], one per digit
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image

MNIST_SIDE = 28
EXIF_ORIENTATION_TAG = 0x0112
# Stored pixels = displayed image transposed by the inverse of what the Orientation tag asks a
# viewer to do (ImageOps.exif_transpose applies ROTATE_270 for 6, ROTATE_180 for 3, ROTATE_90 for 8).
STORE_ROTATED: dict[int, Image.Transpose] = {
    6: Image.Transpose.ROTATE_90, 3: Image.Transpose.ROTATE_180, 8: Image.Transpose.ROTATE_270,
}


@dataclass(frozen=True)
class Sheet:
    """A digit on paper, before the light: per-pixel ink coverage and where the digit sits."""

    coverage: np.ndarray  # float32 [H, W] in [0, 1]: 1 where the pen laid ink
    paper: np.ndarray  # float32 [3]: the paper's RGB reflectance
    ink: np.ndarray  # float32 [3]: the ink's RGB reflectance


def _place_on_sheet(digit: np.ndarray, scale: float, rng: np.random.Generator) -> Sheet:
    """The digit enlarged `scale` times at a random place on a sheet 1.3-2.2x its box, portrait or landscape."""
    side = max(MNIST_SIDE, int(round(MNIST_SIDE * scale)))
    big = np.asarray(Image.fromarray(digit).resize((side, side), Image.Resampling.BICUBIC), np.float32) / 255.0
    width = int(side * rng.uniform(1.3, 2.2))
    height = int(width * rng.uniform(0.75, 1.35))
    height = max(height, side + 2)
    coverage = np.zeros((height, width), np.float32)
    top, left = int(rng.integers(0, height - side + 1)), int(rng.integers(0, width - side + 1))
    coverage[top : top + side, left : left + side] = np.clip(big, 0.0, 1.0)
    paper = np.clip(np.array([0.93, 0.91, 0.86], np.float32) * rng.uniform(0.85, 1.05) + rng.normal(0, 0.02, 3), 0.6, 1.0)
    ink = np.clip(np.array(rng.choice([[0.08, 0.08, 0.1], [0.1, 0.12, 0.35], [0.2, 0.2, 0.2]]), np.float32)
                  + rng.normal(0, 0.02, 3), 0.0, 0.4).astype(np.float32)
    return Sheet(coverage, paper.astype(np.float32), ink)


GRAIN_SIDE = 1280


class Grain:
    """A camera's sensor noise: windows at random offsets of one tile of unit Gaussian noise.

    Drawing fresh normals for every photo is most of the cost; windows of one tile drawn per call
    of a generator look the same to a model and are ten times cheaper."""

    def __init__(self, rng: np.random.Generator, channels: int = 3) -> None:
        self.rng = rng
        self.tile = rng.standard_normal((GRAIN_SIDE, GRAIN_SIDE, channels), dtype=np.float32)

    def window(self, height: int, width: int) -> np.ndarray:
        if height > GRAIN_SIDE or width > GRAIN_SIDE:
            return self.rng.standard_normal((height, width, self.tile.shape[2]), dtype=np.float32)
        top = int(self.rng.integers(0, GRAIN_SIDE - height + 1))
        left = int(self.rng.integers(0, GRAIN_SIDE - width + 1))
        return self.tile[top : top + height, left : left + width]


def _photograph(sheet: Sheet, light: np.ndarray, grain: Grain, noise: float = 0.012) -> np.ndarray:
    """Reflectance x illumination + sensor noise -> uint8 RGB [H, W, 3]."""
    coverage = sheet.coverage[..., None]
    pixels = sheet.paper + (sheet.ink - sheet.paper) * coverage  # reflectance
    pixels *= light[..., None]
    pixels += noise * grain.window(*pixels.shape[:2])
    np.clip(pixels, 0.0, 1.0, out=pixels)
    pixels *= 255.0
    pixels += 0.5
    return pixels.astype(np.uint8)


LIGHT_STEP = 8  # the light is smooth: computed on a grid 8x coarser, then resized bilinearly


def _grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Coarse-grid coordinates scaled to [-1, 1] along each axis."""
    ys = np.linspace(-1.0, 1.0, max(2, height // LIGHT_STEP), dtype=np.float32)[:, None]
    xs = np.linspace(-1.0, 1.0, max(2, width // LIGHT_STEP), dtype=np.float32)[None, :]
    return ys, xs


def _full_size(coarse: np.ndarray, height: int, width: int) -> np.ndarray:
    return np.asarray(Image.fromarray(coarse.astype(np.float32), "F").resize((width, height), Image.Resampling.BILINEAR))


def gradient_light(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """A linear fall-off in a random direction to 45-70 % of the light, times a mild vignette."""
    ys, xs = _grid(height, width)
    angle = rng.uniform(0, 2 * np.pi)
    along = (np.cos(angle) * xs + np.sin(angle) * ys) / np.sqrt(2.0)  # in [-1, 1]
    darkest = rng.uniform(0.45, 0.7)
    linear = 1.0 - (1.0 - darkest) * (along + 1.0) / 2.0
    vignette = 1.0 - rng.uniform(0.0, 0.15) * (xs**2 + ys**2) / 2.0
    return _full_size(linear * vignette, height, width)


def shadow_light(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """A shadow over one side: a soft-edged half-plane covering about 15-45 % of the sheet."""
    ys, xs = _grid(height, width)
    angle = rng.uniform(0, 2 * np.pi)
    along = np.cos(angle) * xs + np.sin(angle) * ys  # the shadow is where `along` is large
    edge = float(np.quantile(along, 1.0 - rng.uniform(0.15, 0.45)))
    softness = rng.uniform(0.01, 0.12)
    inside = 1.0 / (1.0 + np.exp(-(along - edge) / softness))
    depth = rng.uniform(0.35, 0.6)  # the light left in the shadow
    return _full_size(1.0 - (1.0 - depth) * inside, height, width)


def _encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _photo(digit: np.ndarray, grain: Grain, scale: tuple[float, float],
           light: Callable[[int, int, np.random.Generator], np.ndarray] | None) -> Image.Image:
    rng = grain.rng
    sheet = _place_on_sheet(digit, rng.uniform(*scale), rng)
    height, width = sheet.coverage.shape
    illumination = light(height, width, rng) if light else np.full((height, width), rng.uniform(0.8, 1.0), np.float32)
    return Image.fromarray(_photograph(sheet, illumination, grain), "RGB")


def _jpeg_quality(rng: np.random.Generator) -> int:
    return int(rng.integers(70, 96))


def scan(digits: np.ndarray, rng: np.random.Generator) -> list[bytes]:
    """Dark ink on evenly lit paper at any scale (1.5-14x), off centre, JPEG quality 70-95."""
    grain = Grain(rng)
    return [_encode(_photo(d, grain, (1.5, 14.0), None), "JPEG", quality=_jpeg_quality(rng)) for d in digits]


def shaded(digits: np.ndarray, rng: np.random.Generator) -> list[bytes]:
    """Ink on paper under a smooth gradient of light (8-14x), JPEG quality 70-95."""
    grain = Grain(rng)
    return [_encode(_photo(d, grain, (8.0, 14.0), gradient_light), "JPEG", quality=_jpeg_quality(rng)) for d in digits]


def shadow(digits: np.ndarray, rng: np.random.Generator) -> list[bytes]:
    """Ink on paper with a shadow across one side (8-14x), JPEG quality 70-95."""
    grain = Grain(rng)
    return [_encode(_photo(d, grain, (8.0, 14.0), shadow_light), "JPEG", quality=_jpeg_quality(rng)) for d in digits]


def exif_rotated(digits: np.ndarray, rng: np.random.Generator) -> list[bytes]:
    """Phone JPEGs: pixels stored rotated, EXIF Orientation 6, 3 or 8 telling the viewer how to turn them."""
    grain = Grain(rng)
    files = []
    for digit in digits:
        orientation = int(rng.choice([6, 3, 8]))
        stored = _photo(digit, grain, (8.0, 14.0), None).transpose(STORE_ROTATED[orientation])
        exif = Image.Exif()
        exif[EXIF_ORIENTATION_TAG] = orientation
        files.append(_encode(stored, "JPEG", quality=_jpeg_quality(rng), exif=exif.tobytes()))
    return files


def png16(digits: np.ndarray, rng: np.random.Generator) -> list[bytes]:
    """16-bit grayscale PNG scans (2-10x): paper and ink levels anywhere in the 16-bit range."""
    grain = Grain(rng, channels=1)
    files = []
    for digit in digits:
        sheet = _place_on_sheet(digit, rng.uniform(2.0, 10.0), rng)
        paper, ink = rng.uniform(0.55, 0.98), rng.uniform(0.02, 0.3)
        level = paper + (ink - paper) * sheet.coverage
        level += 0.004 * grain.window(*level.shape)[..., 0]
        values = (np.clip(level, 0.0, 1.0) * 65535.0 + 0.5).astype(np.uint16)
        files.append(_encode(Image.fromarray(values), "PNG", compress_level=1))
    return files


def float_tiff(digits: np.ndarray, rng: np.random.Generator) -> list[bytes]:
    """32-bit float TIFFs in [0, 1] (1-4x, padded): half white on black as MNIST, half dark on light."""
    files = []
    for digit in digits:
        scale = rng.uniform(1.0, 4.0)
        side = int(round(MNIST_SIDE * scale))
        big = np.asarray(Image.fromarray(digit).resize((side, side), Image.Resampling.BICUBIC), np.float32) / 255.0
        pad = [int(p) for p in rng.integers(0, side // 2 + 1, 4)]
        values = np.pad(np.clip(big, 0.0, 1.0), ((pad[0], pad[1]), (pad[2], pad[3])))
        if rng.random() < 0.5:
            values = 1.0 - values * rng.uniform(0.6, 0.95)
        files.append(_encode(Image.fromarray(values.astype(np.float32), "F"), "TIFF"))
    return files


GENERATORS: dict[str, Callable[[np.ndarray, np.random.Generator], list[bytes]]] = {
    "scan": scan,
    "shaded": shaded,
    "shadow": shadow,
    "exif": exif_rotated,
    "png16": png16,
    "float_tiff": float_tiff,
}


def generate(name: str, digits: np.ndarray, seed: int = 0) -> list[bytes]:
    """One encoded file per MNIST digit (uint8 [n, 28, 28], white on black), from the generator `name`."""
    if name not in GENERATORS:
        raise KeyError(f"unknown generator {name!r}; one of {', '.join(GENERATORS)}")
    if digits.ndim != 3 or digits.shape[1:] != (MNIST_SIDE, MNIST_SIDE) or digits.dtype != np.uint8:
        raise ValueError(f"digits must be uint8 [n, 28, 28], got {digits.dtype} {digits.shape}")
    return GENERATORS[name](digits, np.random.default_rng(seed))
