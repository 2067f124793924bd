"""Encoded image files -> loaded Pillow images: six formats only, priced before any pixel is decoded.

`probe_image` reads the header alone (format, size, frames, EXIF orientation) and refuses what this
server does not decode; `decode_image` then loads the first frame, turns it upright as its EXIF
Orientation says, maps every mode to one of a few working modes and reduces big images to the
working size (at decode time for JPEG, by DCT scaling). Whatever Pillow raises on a damaged file
becomes a 4xx naming `where`.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from service.errors import PayloadTooLarge, ServiceError, Unprocessable, UnsupportedMediaType

# The formats the docs name; Pillow's other plugins (some of which shell out to external programs)
# are never asked to open anything.
ALLOWED_FORMATS: tuple[str, ...] = ("PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP")
ALLOWED_NAMES = "PNG, JPEG, BMP, GIF, TIFF or WebP"
# What a recognised file's format is called by the allowlist: a multi-picture JPEG opens as MPO.
FORMAT_FAMILY = {"MPO": "JPEG"}


@dataclass(frozen=True)
class ImageInfo:
    """What a file's header says, before any pixel is decoded."""

    format: str  # one of ALLOWED_FORMATS
    width: int  # as stored (EXIF orientations 5-8 show it turned by 90 degrees)
    height: int
    frames: int  # only the first is decoded
    orientation: int = 1  # EXIF Orientation, 1-8 (1: as stored)

    @property
    def pixels(self) -> int:
        """What decoding costs: width x height of the first frame."""
        return self.width * self.height


@contextmanager
def pillow_errors(where: str) -> Iterator[None]:
    """Inside: calls into Pillow's parsers on untrusted bytes. Whatever they raise means a bad file.

    Pillow raises OSError and ValueError for most damage, but also SyntaxError, EOFError,
    struct.error, IndexError, KeyError, TypeError, ZeroDivisionError... on odd files, and which
    ones changes between versions, so everything but this server's own errors is a 422 here."""
    try:
        yield
    except ServiceError:
        raise
    except UnidentifiedImageError as exc:  # its message shows an internal object's address
        raise Unprocessable(f"{where}: not a readable image file (format not recognised; send {ALLOWED_NAMES})") from exc
    except Image.DecompressionBombError as exc:
        raise PayloadTooLarge(f"{where}: decompression bomb refused by Pillow's guard ({exc})") from exc
    except MemoryError as exc:
        raise PayloadTooLarge(f"{where}: decoding this image needs more memory than the server has") from exc
    except Exception as exc:  # noqa: BLE001 - see the docstring
        raise Unprocessable(f"{where}: not a readable image file ({exc.__class__.__name__}: {exc})") from exc


def _recognised_elsewhere(data: bytes) -> str | None:
    """The format of another Pillow plugin whose signature check accepts these bytes, if any.

    Only the plugins' `accept` functions run: they compare the first bytes with a magic number and
    decode nothing. Plugins without a signature check (they would claim anything) are skipped."""
    Image.init()
    prefix = data[:16]
    for name, (_factory, accept) in Image.OPEN.items():
        if name in ALLOWED_FORMATS or name in FORMAT_FAMILY or accept is None:
            continue
        try:
            if accept(prefix):
                return name
        except Exception:  # noqa: BLE001 - a signature check that fails on odd bytes did not match
            continue
    return None


def _orientation(image: Image.Image) -> int:
    """EXIF Orientation as the header has it (1 when absent, unreadable or out of range)."""
    try:
        value = image.getexif().get(ExifTags.Base.Orientation, 1)
    except Exception:  # noqa: BLE001 - broken EXIF: the pixels are still readable, shown as stored
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _open(data: bytes, where: str, max_pixels: int | None) -> tuple[Image.Image, ImageInfo]:
    if not data:
        raise Unprocessable(f"{where}: empty image file")
    limit = "" if max_pixels is None else f"; the max_image_pixels limit is {max_pixels}"
    with pillow_errors(where):
        try:
            image = Image.open(io.BytesIO(data), formats=list(ALLOWED_FORMATS))
        except Image.DecompressionBombError as exc:  # past twice Pillow's limit, raised while opening
            raise PayloadTooLarge(f"{where}: decompression bomb refused by Pillow's guard ({exc}){limit}") from exc
        except UnidentifiedImageError:
            other = _recognised_elsewhere(data)
            if other is not None:
                raise UnsupportedMediaType(f"{where}: the file is in {other} format (by its first bytes), which is "
                                           f"not accepted; send {ALLOWED_NAMES}") from None
            raise
        width, height = image.size
        if width < 1 or height < 1:
            raise Unprocessable(f"{where}: image has no pixels ({width}x{height})")
        pillow_limit = Image.MAX_IMAGE_PIXELS
        if max_pixels is not None and width * height > max_pixels:
            raise PayloadTooLarge(f"{where}: {width}x{height} pixels exceeds the max_image_pixels limit of {max_pixels}")
        if pillow_limit and width * height > pillow_limit:
            raise PayloadTooLarge(f"{where}: {width}x{height} pixels exceeds Pillow's decompression bomb limit of "
                                  f"{pillow_limit}{limit}")
        frames = int(getattr(image, "n_frames", 1) or 1)
        fmt = FORMAT_FAMILY.get(image.format or "", image.format or "")
        return image, ImageInfo(fmt, width, height, frames, _orientation(image))


def probe_image(data: bytes, where: str = "image", max_pixels: int | None = None) -> ImageInfo:
    """Header only: the format (one of ALLOWED_FORMATS), size, frame count and EXIF orientation.

    Raises Unprocessable (422) for bytes no allowed format recognises or a header that does not
    parse, UnsupportedMediaType (415) for a file another image format's signature matches (EPS,
    PSD, ICO...), PayloadTooLarge (413) over `max_pixels` or Pillow's own bomb limit."""
    image, info = _open(data, where, max_pixels)
    image.close()
    return info


# Decoded modes -> the few that the gray conversion reads. Alpha is kept premultiplied ("La") so that
# reducing never mixes the colour of transparent pixels into visible ones.
OPAQUE_TO_L = ("1", "L", "P", "RGB", "RGBX", "CMYK", "YCbCr")
HIGH_DEPTH = ("I", "I;16", "I;16B", "I;16L", "I;16N", "I;16S", "F")


def _real_range(values: np.ndarray, mode: str, where: str) -> np.ndarray:
    """16-bit, 32-bit and float pixels -> float32 in [0, 1] by the range they really use.

    16-bit: /65535. Float: as is when inside [0, 1], /255 inside [0, 255], /65535 inside
    [0, 65535]. 32-bit integers: /255 or /65535 the same way. Anything else: min to max."""
    values = values.astype(np.float32, copy=False)
    if not np.isfinite(values).all():
        raise Unprocessable(f"{where}: float image has values that are not finite numbers (NaN or infinity)")
    low, high = float(values.min()), float(values.max())
    if mode.startswith("I;16") and mode != "I;16S":
        return values / np.float32(65535.0)
    ranges = ((1.0,) if mode == "F" else ()) + (255.0, 65535.0)
    for top in ranges:
        if low >= 0.0 and high <= top:
            return values / np.float32(top)
    return (values - low) / np.float32(high - low)


def _working_mode(image: Image.Image, where: str) -> Image.Image:
    """Any decoded mode -> "L" (8-bit gray), "F" (float in [0, 1]) or "La" (premultiplied gray + alpha)."""
    mode = image.mode
    has_alpha = mode in ("LA", "PA", "RGBA", "La", "RGBa") or "transparency" in image.info
    if has_alpha:
        if mode in ("LA", "La"):
            return image.convert("La") if mode == "LA" else image
        return image.convert("RGBA").convert("LA").convert("La")
    if mode in HIGH_DEPTH:
        return Image.fromarray(_real_range(np.asarray(image), mode, where), "F")
    if mode == "LAB":
        return image.getchannel("L")  # L*: the lightness, 0-255
    if mode in OPAQUE_TO_L:
        return image.convert("L")
    raise Unprocessable(f"{where}: images in Pillow mode {mode} are not supported")


def decode_image(data: bytes, max_pixels: int, where: str = "image", working_side: int | None = None,
                 exact_side: int | None = None) -> Image.Image:
    """The first frame, upright, in mode "L", "F" or "La"; its longer side reduced to at most
    `working_side` (when given) with the cheapest filter that averages: JPEG's DCT scaling, then
    box reduction by a whole factor, then a box resize. With `exact_side`, a file of any other
    size is refused from its header, before decoding."""
    image, info = _open(data, where, max_pixels)
    if exact_side is not None and (info.width, info.height) != (exact_side, exact_side):
        image.close()
        raise Unprocessable(f"{where}: is {info.width}x{info.height}; without preprocessing it must be "
                            f"{exact_side}x{exact_side}")
    with pillow_errors(where):
        if working_side and info.format == "JPEG" and max(info.width, info.height) > working_side:
            ratio = working_side / max(info.width, info.height)
            target = (max(1, math.ceil(info.width * ratio)), max(1, math.ceil(info.height * ratio)))
            image.draft("L" if image.mode == "RGB" else None, target)
        image.load()
        if _orientation(image) != 1:  # read again: a PNG may keep its EXIF after the pixels
            ImageOps.exif_transpose(image, in_place=True)
        image = _working_mode(image, where)
        if working_side and max(image.size) > working_side:
            factor = max(image.size) // working_side
            if factor >= 2:
                image = image.reduce(factor)
            if max(image.size) > working_side:
                ratio = working_side / max(image.size)
                image = image.resize((max(1, round(image.width * ratio)), max(1, round(image.height * ratio))),
                                     Image.Resampling.BOX)
    return image
