"""Users' images -> MNIST-style 28x28 inputs, the way the MNIST set itself was made.

Grayscale; invert when the digit is dark on a light background; crop to the ink; scale the
longer side to 20 px keeping the aspect ratio; paste into 28x28 with the centre of mass at
the centre.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, UnidentifiedImageError

from service.errors import PayloadTooLarge, Unprocessable

SIZE = 28
DIGIT_BOX = 20
INK_THRESHOLD = 0.2  # fraction of the brightest pixel that counts as ink when cropping


def decode_image(data: bytes, max_pixels: int, where: str = "image") -> Image.Image:
    """Open an encoded image, refusing decompression bombs before any pixel is decoded."""
    if not data:
        raise Unprocessable(f"{where}: empty image file")
    # Pillow's guard is checked here rather than by turning its warning into an error with
    # warnings.catch_warnings(): that swaps process-wide filters and is not thread-safe, and
    # images are decoded in worker threads. Past twice its limit Pillow raises by itself.
    pillow_limit = Image.MAX_IMAGE_PIXELS or max_pixels
    try:
        image = Image.open(io.BytesIO(data))
        width, height = image.size
        if width * height > max_pixels:
            raise PayloadTooLarge(f"{where}: {width}x{height} pixels exceeds the max_image_pixels limit of {max_pixels}")
        if width * height > pillow_limit:
            raise PayloadTooLarge(f"{where}: {width}x{height} pixels exceeds Pillow's decompression bomb limit of "
                                  f"{pillow_limit} (the max_image_pixels limit is {max_pixels})")
        image.load()
    except UnidentifiedImageError as exc:  # its message shows an internal object's address
        raise Unprocessable(f"{where}: not a readable image file (format not recognised; "
                            "send PNG, JPEG, BMP, GIF, TIFF or WebP)") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise Unprocessable(f"{where}: not a readable image file ({exc.__class__.__name__}: {exc})") from exc
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise PayloadTooLarge(f"{where}: decompression bomb refused by Pillow's guard ({exc}); "
                              f"the max_image_pixels limit is {max_pixels}") from exc
    if width < 1 or height < 1:
        raise Unprocessable(f"{where}: image has no pixels")
    return image


def to_gray(image: Image.Image) -> np.ndarray:
    """float32 [H, W] in [0, 1]. Transparent areas become background: ink is whatever is opaque."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = np.asarray(image.convert("RGBA"), dtype=np.float32) / 255.0
        alpha = rgba[..., 3]
        luminance = rgba[..., :3] @ np.array([0.299, 0.587, 0.114], np.float32)
        opaque = alpha > 0.5
        ink_is_light = bool(opaque.any()) and float(luminance[opaque].mean()) > 0.5
        background = 0.0 if ink_is_light else 1.0
        return luminance * alpha + background * (1.0 - alpha)
    return np.asarray(image.convert("L"), dtype=np.float32) / 255.0


def mnist_style(gray: np.ndarray) -> np.ndarray:
    """[H, W] floats in [0, 1], any size and polarity -> [28, 28] white-on-black, centred."""
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    background = float(np.median(border))
    if background > 0.5:
        gray = 1.0 - gray
        background = 1.0 - background
    ink = np.clip((gray - background) / max(1.0 - background, 1e-6), 0.0, 1.0)
    peak = float(ink.max())
    if peak <= 0.0:
        return np.zeros((SIZE, SIZE), np.float32)
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
    return _centre_of_mass_shift(canvas)


def _centre_of_mass_shift(canvas: np.ndarray) -> np.ndarray:
    total = float(canvas.sum())
    if total <= 0:
        return canvas
    ys, xs = np.indices(canvas.shape)
    cy, cx = float((ys * canvas).sum() / total), float((xs * canvas).sum() / total)
    dy, dx = int(round((SIZE - 1) / 2 - cy)), int(round((SIZE - 1) / 2 - cx))
    rows, cols = np.nonzero(canvas)
    # keep the whole digit inside the frame
    dy = int(np.clip(dy, -rows.min(), SIZE - 1 - rows.max()))
    dx = int(np.clip(dx, -cols.min(), SIZE - 1 - cols.max()))
    return np.roll(canvas, (dy, dx), axis=(0, 1))


def image_to_input(data: bytes, max_pixels: int, preprocess: bool, where: str = "image") -> np.ndarray:
    """An encoded image -> [28, 28] float32 in [0, 1]."""
    gray = to_gray(decode_image(data, max_pixels, where))
    if preprocess:
        return mnist_style(gray)
    if gray.shape != (SIZE, SIZE):
        raise Unprocessable(f"{where}: is {gray.shape[1]}x{gray.shape[0]}; without preprocessing it must be 28x28")
    return gray
