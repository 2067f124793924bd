"""The Open Inference Protocol's binary wire format for the tests, in one place: bodies built by hand
(the broken ones tritonclient never sends) and responses decoded by tritonclient's own decoder."""

from __future__ import annotations

import json
from typing import Any

import httpx
import numpy as np
from tritonclient.http import InferResult

HEADER_LENGTH = "Inference-Header-Content-Length"


def binary_body(header: dict[str, Any], *chunks: bytes) -> tuple[bytes, dict[str, str]]:
    """A JSON header followed by raw tensor bytes, and the headers that describe it."""
    encoded = json.dumps(header).encode()
    return encoded + b"".join(chunks), {HEADER_LENGTH: str(len(encoded)), "Content-Type": "application/octet-stream"}


def decode_response(response: httpx.Response) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """A 200 response (JSON or binary) -> its JSON part and every output as an array, decoded by
    tritonclient.http.InferResult.from_response_body, the decoder Triton's users rely on."""
    assert response.status_code == 200, response.text
    length = response.headers.get(HEADER_LENGTH)
    result = InferResult.from_response_body(response.content, header_length=int(length) if length else None)
    described = result.get_response()
    return described, {output["name"]: result.as_numpy(output["name"]) for output in described["outputs"]}
