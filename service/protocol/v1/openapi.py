"""The V1 request bodies as OpenAPI schemas (JSON forms and multipart uploads), with an example."""

from __future__ import annotations

from typing import Any

_ROW = {"type": "array", "items": {"type": "number"}, "minItems": 28, "maxItems": 28}
_IMAGE = {"type": "array", "items": _ROW, "minItems": 28, "maxItems": 28,
          "description": "28x28 pixels: all integers = 0-255, any decimal number = [0, 1]; white digit on black"}
_B64 = {"type": "string", "description": "base64 of an image file (PNG, JPEG, BMP, GIF, TIFF, WebP) or a data: URL"}
_ONE = {"type": "object", "additionalProperties": False}
_SINGLE_FORMS = [
    {**_ONE, "properties": {"image": _IMAGE}, "required": ["image"]},
    {**_ONE, "properties": {"image_base64": _B64}, "required": ["image_base64"]},
]
_BATCH_FORMS = _SINGLE_FORMS + [
    {**_ONE, "properties": {"images": {"type": "array", "items": _IMAGE, "minItems": 1}}, "required": ["images"]},
    {**_ONE, "properties": {"images_base64": {"type": "array", "items": _B64, "minItems": 1}}, "required": ["images_base64"]},
]
_MULTIPART = {"multipart/form-data": {"schema": {"type": "object", "properties": {
    "file": {"type": "array", "items": {"type": "string", "format": "binary"}}}, "required": ["file"]}}}
EXAMPLE_SEVEN = [[0] * 28 for _ in range(6)] + [[0] * 6 + [255] * 16 + [0] * 6] + \
    [[0] * (20 - i // 2) + [255] * 2 + [0] * (6 + i // 2) for i in range(14)] + [[0] * 28 for _ in range(7)]


def _body(forms: list[dict[str, Any]]) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {
        "application/json": {"schema": {"oneOf": forms}, "example": {"image": EXAMPLE_SEVEN}}, **_MULTIPART}}}


BATCH_BODY = _body(_BATCH_FORMS)
SINGLE_BODY = _body(_SINGLE_FORMS)
