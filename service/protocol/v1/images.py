"""V1 request bodies -> the model's input images. No HTTP here.

JSON arrays: all JSON integers mean the 0-255 scale, any number written with a decimal point or
an exponent means the [0, 1] scale. Image files (base64 in JSON, or multipart parts read by the
HTTP layer) go through MNIST-style preprocessing unless it is turned off. A request's image files
are priced together before any is decoded: each header is read (service.preprocess.probe_image)
and their pixels must stay within max_request_pixels.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.errors import PayloadTooLarge, Unprocessable
from service.preprocess import SIZE, image_to_input, mnist_style, probe_image

V1_IMAGE_KEYS = ("image", "images", "image_base64", "images_base64")


@dataclass
class InputLimits:
    max_images: int
    max_encoded_bytes: int
    max_pixels: int
    max_request_pixels: int | None = None  # all of a request's files together; None: no such limit


@dataclass
class ParsedImages:
    images: np.ndarray  # float32 [n, 28, 28] in [0, 1]
    encoded: bool  # came from image files (preprocessed by default)


def _describe_shape_error(value: Any, where: str) -> str:
    if not isinstance(value, list):
        return f"{where} must be a 28x28 array (a list of 28 rows of 28 numbers)"
    if len(value) != SIZE:
        return f"{where} has {len(value)} rows, expected 28"
    for row_index, row in enumerate(value):
        if not isinstance(row, list):
            return f"{where}[{row_index}] must be a list of 28 numbers"
        if len(row) != SIZE:
            return f"{where}[{row_index}] has {len(row)} values, expected 28"
        for col_index, cell in enumerate(row):
            if isinstance(cell, bool) or not isinstance(cell, (int, float)):
                return f"{where}[{row_index}][{col_index}] is {type(cell).__name__}, expected a number"
    return f"{where} must be a 28x28 array of numbers"


def array_to_image(value: Any, where: str) -> np.ndarray:
    """A JSON 28x28 array -> float32 [28, 28] in [0, 1], checking shape, types and range."""
    try:
        array = np.asarray(value)
    except (ValueError, TypeError):
        raise Unprocessable(_describe_shape_error(value, where)) from None
    if array.shape != (SIZE, SIZE) or array.dtype.kind not in "iuf":
        raise Unprocessable(_describe_shape_error(value, where))
    if array.dtype.kind in "iu":
        low, high = int(array.min()), int(array.max())
        if low < 0 or high > 255:
            raise Unprocessable(f"{where}: integer values must be 0-255 (found {low}..{high})")
        return array.astype(np.float32) / np.float32(255.0)
    array = array.astype(np.float32)
    low, high = float(array.min()), float(array.max())
    if not (math.isfinite(low) and math.isfinite(high)):
        raise Unprocessable(f"{where}: values must be finite numbers")
    if low < 0.0 or high > 1.0:
        raise Unprocessable(f"{where}: float values must be in [0, 1] (found {low:g}..{high:g}); "
                            "send integers for the 0-255 scale")
    return array


def base64_file(value: Any, limits: InputLimits, where: str) -> bytes:
    """A base64 string (or data URL) -> the image file's bytes, within max_encoded_image_bytes."""
    if not isinstance(value, str):
        raise Unprocessable(f"{where} must be a base64 string of an image file")
    if value.startswith("data:"):  # a data URL, as canvas.toDataURL() gives
        value = value.partition(",")[2]
    if len(value) * 3 // 4 > limits.max_encoded_bytes:
        raise PayloadTooLarge(f"{where}: encoded image exceeds the max_encoded_image_bytes limit of {limits.max_encoded_bytes}")
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise Unprocessable(f"{where}: not valid base64 ({exc})") from exc
    return data


def decode_base64_image(value: Any, limits: InputLimits, preprocess: bool, where: str) -> np.ndarray:
    return decode_files([(where, base64_file(value, limits, where))], limits, preprocess)[0]


def check_file_size(data: bytes, limits: InputLimits, where: str) -> None:
    if len(data) > limits.max_encoded_bytes:
        raise PayloadTooLarge(f"{where}: {len(data)} bytes exceeds the max_encoded_image_bytes limit of {limits.max_encoded_bytes}")


def decode_files(files: Sequence[tuple[str, bytes]], limits: InputLimits, preprocess: bool) -> np.ndarray:
    """Image files (where, bytes) -> float32 [n, 28, 28]. Every header is read, and the pixels of
    all of them priced against max_request_pixels, before any file is decoded."""
    total = 0
    for where, data in files:
        total += probe_image(data, where, limits.max_pixels).pixels
        if limits.max_request_pixels is not None and total > limits.max_request_pixels:
            raise PayloadTooLarge(f"{where}: the request's images have {total} pixels up to here, over the "
                                  f"max_request_pixels limit of {limits.max_request_pixels}")
    return np.stack([image_to_input(data, limits.max_pixels, preprocess, where) for where, data in files])


def parse_v1_images(body: Mapping[str, Any], limits: InputLimits, preprocess: bool | None, single: bool) -> ParsedImages:
    """The one image field of a V1 JSON body -> a batch. `single` allows only one image."""
    present = [key for key in V1_IMAGE_KEYS if key in body]
    allowed = ("image", "image_base64") if single else V1_IMAGE_KEYS
    if len(present) != 1:
        wanted = " or ".join(f"'{key}'" for key in allowed)
        raise Unprocessable(f"send exactly one of {wanted}" + (f" (got {', '.join(present)})" if present else ""))
    key = present[0]
    if key not in allowed:
        raise Unprocessable(f"'{key}' is not accepted here: this endpoint takes one image ('image' or 'image_base64')")
    value = body[key]
    if key in ("images", "images_base64"):
        if not isinstance(value, list) or not value:
            raise Unprocessable(f"'{key}' must be a non-empty list")
        if len(value) > limits.max_images:
            raise PayloadTooLarge(f"'{key}' has {len(value)} images, over the max_images_per_request limit of {limits.max_images}")
        items = [(f"{key}[{index}]", item) for index, item in enumerate(value)]
    else:
        items = [(key, value)]
    encoded = key.endswith("base64")
    apply = encoded if preprocess is None else preprocess
    if encoded:
        return ParsedImages(decode_files([(where, base64_file(item, limits, where)) for where, item in items], limits,
                                         apply), encoded=True)
    images = [array_to_image(item, where) for where, item in items]
    if apply:
        images = [mnist_style(image) for image in images]
    return ParsedImages(images=np.stack(images), encoded=False)


def to_batch(images: np.ndarray) -> np.ndarray:
    """[n, 28, 28] -> the contract's [n, 1, 28, 28] float32, contiguous."""
    return np.ascontiguousarray(images[:, None, :, :], dtype=np.float32)
