"""A V2 request for a contract model: its one input checked and turned into the model's batch,
and the model's results turned into the response's outputs. Shared by REST and gRPC."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from contract.spec import INPUT_NAME, INPUT_SHAPE
from service.errors import BadRequest, PayloadTooLarge
from service.protocol.v2.datatypes import DATATYPES, OUTPUT_DATATYPE
from service.protocol.v2.types import InferOutput, InferRequest, InferResponse, RequestedOutput


def input_check(max_images: int):  # -> rest.InputCheck
    """The contract's input: its name, shape [-1, 1, 28, 28], and at most `max_images` in a batch."""

    def check(name: str, datatype: str, shape: list[int]) -> None:
        if name != INPUT_NAME:
            raise BadRequest(f"unknown input {name!r}; the model's input is {INPUT_NAME!r}")
        if len(shape) != 1 + len(INPUT_SHAPE) or tuple(shape[1:]) != INPUT_SHAPE or shape[0] < 1:
            raise BadRequest(f"input {name!r}: shape {shape} does not match [-1, {', '.join(map(str, INPUT_SHAPE))}]")
        if shape[0] > max_images:
            raise PayloadTooLarge(f"input {name!r}: batch of {shape[0]} exceeds the max_images_per_request limit "
                                  f"of {max_images}")

    return check


def request_batch(request: InferRequest) -> np.ndarray:
    """The request's one input as the contract's float32 [n, 1, 28, 28] in [0, 1]."""
    if len(request.inputs) != 1:
        raise BadRequest(f"'inputs' must hold exactly one input, {INPUT_NAME!r}; got {len(request.inputs)}")
    tensor = request.inputs[0]
    datatype = DATATYPES[tensor.datatype]
    if datatype.scale_0_255:
        return np.ascontiguousarray(tensor.data, dtype=np.float32) / np.float32(255.0)
    array = np.ascontiguousarray(tensor.data, dtype=np.float32)
    low, high = float(array.min()), float(array.max())
    if not (math.isfinite(low) and math.isfinite(high)):
        raise BadRequest(f"input {tensor.name!r}: values must be finite (NaN or infinity found)")
    if low < 0.0 or high > 1.0:
        raise BadRequest(f"input {tensor.name!r}: {tensor.datatype} values must be in [0, 1] "
                         f"(found {low:g}..{high:g}); use UINT8 for 0-255")
    return array


def requested_outputs(request: InferRequest, model_outputs: Sequence[str]) -> list[RequestedOutput]:
    if request.outputs is not None:
        return request.outputs
    return [RequestedOutput(name, request.binary_outputs_by_default) for name in model_outputs]


def response(model_name: str, model_version: int, request: InferRequest, outputs: Sequence[RequestedOutput],
             results: Mapping[str, np.ndarray]) -> InferResponse:
    return InferResponse(
        model_name=model_name, model_version=str(model_version), id=request.id,
        outputs=[InferOutput(out.name, OUTPUT_DATATYPE, list(results[out.name].shape), results[out.name], out.binary)
                 for out in outputs],
    )
