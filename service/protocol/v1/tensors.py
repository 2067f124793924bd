"""Tensors -> V1 JSON layer payloads: statistics, histograms, and json/base64/png encodings."""

from __future__ import annotations

import base64
import io
from typing import Any, Literal

import numpy as np
from PIL import Image

Encoding = Literal["json", "base64", "png"]
ENCODINGS = ("json", "base64", "png")


def statistics(values: np.ndarray, bins: int) -> dict[str, Any]:
    flat = values.astype(np.float64, copy=False).ravel()
    counts, edges = np.histogram(flat, bins=bins)
    return {
        "min": float(flat.min()), "max": float(flat.max()), "mean": float(flat.mean()), "std": float(flat.std()),
        "histogram": {"counts": counts.tolist(), "edges": [float(edge) for edge in edges]},
    }


def _round_significant(values: np.ndarray, digits: int = 5) -> np.ndarray:
    magnitude = float(np.max(np.abs(values))) if values.size else 0.0
    if magnitude == 0.0:
        return values.astype(np.float32)
    decimals = max(0, digits - 1 - int(np.floor(np.log10(magnitude))))
    return np.round(values.astype(np.float32), decimals)


def _png(gray: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(gray, mode="L").save(buffer, format="PNG", compress_level=1)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def to_png_channels(values: np.ndarray) -> dict[str, Any]:
    """One 8-bit grayscale PNG per channel of a [C, H, W] tensor (or one 1xF PNG for a vector),
    scaled linearly from the tensor's min..max to 0..255."""
    low, high = float(values.min()), float(values.max())
    span = high - low if high > low else 1.0
    scaled = np.clip(np.rint((values - low) * (255.0 / span)), 0, 255).astype(np.uint8)
    if scaled.ndim == 1:
        channels = [_png(scaled[None, :])]
    elif scaled.ndim == 2:
        channels = [_png(scaled)]
    else:
        channels = [_png(np.ascontiguousarray(channel)) for channel in scaled.reshape(-1, *scaled.shape[-2:])]
    return {"min": low, "max": high, "channels": channels}


def encode(values: np.ndarray, encoding: Encoding, dtype: str = "float32") -> Any:
    if encoding == "json":
        return _round_significant(values)
    if encoding == "base64":
        raw = np.ascontiguousarray(values, dtype="<f2" if dtype == "float16" else "<f4").tobytes()
        return {"dtype": dtype, "byteorder": "little", "shape": list(values.shape),
                "data": base64.b64encode(raw).decode("ascii")}
    return to_png_channels(values)


def conv_kernels_png(weight: np.ndarray) -> dict[str, Any]:
    """Conv weights [out, in, kh, kw] -> one PNG per output channel: its input-channel kernels side by side."""
    out_channels, in_channels, kh, kw = weight.shape
    tiled = weight.transpose(0, 2, 1, 3).reshape(out_channels, kh, in_channels * kw)
    return to_png_channels(tiled)


def encode_weight(values: np.ndarray, encoding: Encoding, dtype: str = "float32") -> Any:
    if encoding == "png" and values.ndim == 4:
        return conv_kernels_png(values)
    return encode(values, encoding, dtype)
