"""Hostile and ordinary request payloads shared by the hardening tests."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def decompression_bomb(width: int, height: int) -> bytes:
    """A valid all-black 1-bit PNG written row by row, so no pixels are ever held in memory:
    20000x20000 compresses to about 50 KB and would decode to 400 million pixels."""
    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte + packed bits
    compressor = zlib.compressobj(9)
    compressed = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # bit depth 1, grayscale
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", compressed) + png_chunk(b"IEND", b"")


def encode_png(pixels: np.ndarray) -> bytes:
    """uint8 [H, W] (or [H, W, C]) -> PNG bytes."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()
