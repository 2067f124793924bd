"""The Open Inference Protocol's REST bodies <-> typed requests and responses, with Triton's binary
tensor data extension: a JSON header, then raw little-endian tensors, the header's length in the
Inference-Header-Content-Length header."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from service.errors import BadRequest
from service.jsonio import dumps, parse_json
from service.protocol.v2.datatypes import OUTPUT_DTYPE, lookup
from service.protocol.v2.types import (
    UNSUPPORTED_OUTPUT_PARAMETERS,
    InferInput,
    InferRequest,
    InferResponse,
    RequestedOutput,
)

HEADER_LENGTH = "Inference-Header-Content-Length"
JSON_CONTENT_TYPE = "application/json"
BINARY_CONTENT_TYPE = "application/octet-stream"

# Called with each input's name, datatype and shape before its data is read: the model's checks.
InputCheck = Callable[[str, str, list[int]], None]


def _shape(value: Any, name: str) -> list[int]:
    if not isinstance(value, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in value):
        raise BadRequest(f"input {name!r}: shape must be a list of non-negative integers, got {value!r}")
    return value


def _parameters(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadRequest(f"{where}: parameters must be an object")
    return value


def _input(spec: Any, binary: memoryview, offset: int, check: InputCheck) -> tuple[InferInput, int]:
    if not isinstance(spec, dict):
        raise BadRequest("each input must be an object with name, datatype, shape and data")
    name = spec.get("name")
    if not isinstance(name, str):
        raise BadRequest("each input needs a 'name' string")
    datatype = lookup(spec.get("datatype"), f"input {name!r}")
    shape = _shape(spec.get("shape"), name)
    check(name, datatype.name, shape)
    parameters = _parameters(spec.get("parameters"), f"input {name!r}")
    count = math.prod(shape)
    if "binary_data_size" in parameters:
        size = parameters["binary_data_size"]
        expected = count * datatype.dtype.itemsize
        if not isinstance(size, int) or isinstance(size, bool) or size != expected:
            raise BadRequest(f"input {name!r}: binary_data_size {size} does not match shape {shape} of "
                             f"{datatype.name} ({expected} bytes)")
        if offset + size > len(binary):
            raise BadRequest(f"input {name!r}: binary tensor data is truncated: expected {size} bytes, "
                             f"got {len(binary) - offset}")
        array = np.frombuffer(binary[offset : offset + size], dtype=datatype.dtype).reshape(shape)
        return InferInput(name, datatype.name, shape, array, parameters), offset + size
    if "data" not in spec:
        raise BadRequest(f"input {name!r}: no 'data' and no binary_data_size parameter")
    try:
        array = np.asarray(spec["data"], dtype=None if datatype.scale_0_255 else datatype.dtype)
    except (ValueError, TypeError, OverflowError):
        raise BadRequest(f"input {name!r}: data must be {datatype.name} numbers, flat or nested row-major") from None
    if datatype.scale_0_255 and array.size and (array.dtype.kind not in "iu" or int(array.min()) < 0
                                                 or int(array.max()) > 255):
        raise BadRequest(f"input {name!r}: {datatype.name} data must be integers 0-255")
    if array.size != count:
        raise BadRequest(f"input {name!r}: data has {array.size} values, shape {shape} needs {count}")
    return InferInput(name, datatype.name, shape, array.astype(datatype.dtype).reshape(shape), parameters), offset


def _outputs(value: Any, binary_default: bool) -> list[RequestedOutput] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise BadRequest("'outputs' must be a list of {\"name\": ...} objects")
    outputs: list[RequestedOutput] = []
    seen: set[str] = set()
    for item in value:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise BadRequest("each requested output must be an object with a 'name'")
        name = item["name"]
        if name in seen:
            raise BadRequest(f"output {name!r} is requested more than once")
        seen.add(name)
        parameters = _parameters(item.get("parameters"), f"output {name!r}")
        unsupported = [key for key in UNSUPPORTED_OUTPUT_PARAMETERS if key in parameters]
        if unsupported:
            raise BadRequest(f"output {name!r}: parameter {unsupported[0]!r} is not supported by this server "
                             "(extensions: binary_tensor_data)")
        outputs.append(RequestedOutput(name, bool(parameters.get("binary_data", binary_default)), parameters))
    return outputs


def _explain_header_error(message: str, header_length: str | None) -> str:
    """Most JSON errors in a binary request come from a missing or wrong header length: say so."""
    if "not valid JSON" not in message:
        return message
    if header_length is None:
        return f"{message}; a body with binary tensor data needs the {HEADER_LENGTH} header"
    return f"{message}; the JSON header is the first {header_length} bytes of the body, per {HEADER_LENGTH}"


def split_body(body: bytes, header_length: str | None) -> tuple[bytes, memoryview]:
    if header_length is None:
        return body, memoryview(b"")
    try:
        json_size = int(header_length)
    except ValueError:
        raise BadRequest(f"{HEADER_LENGTH} must be an integer, got {header_length!r}") from None
    if json_size < 0 or json_size > len(body):
        raise BadRequest(f"{HEADER_LENGTH} is {json_size} but the body has only {len(body)} bytes")
    return body[:json_size], memoryview(body)[json_size:]


def decode_request(body: bytes, header_length: str | None, max_depth: int, check: InputCheck) -> InferRequest:
    """A REST body -> InferRequest. `check` sees each input's name, datatype and shape before its
    data is read. `max_depth` bounds the JSON nesting; a tensor's data may nest once per dimension
    ([n][1][28][28]), so the caller's limit includes the input's rank."""
    header, binary = split_body(body, header_length)
    try:
        request = parse_json(header, max_depth)
    except BadRequest as exc:
        raise BadRequest(_explain_header_error(exc.message, header_length)) from exc
    if not isinstance(request, dict):
        raise BadRequest("inference request must be a JSON object")
    specs = request.get("inputs")
    if not isinstance(specs, list) or not specs:
        raise BadRequest("'inputs' must be a non-empty list of input tensors")
    inputs: list[InferInput] = []
    offset = 0
    for spec in specs:
        tensor, offset = _input(spec, binary, offset, check)
        inputs.append(tensor)
    if offset != len(binary):
        raise BadRequest(f"binary section has {len(binary) - offset} bytes beyond the inputs' binary_data_size")
    parameters = _parameters(request.get("parameters"), "request")
    request_id = request.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise BadRequest("'id' must be a string")
    binary_default = bool(parameters.get("binary_data_output", False))
    return InferRequest(inputs=inputs, outputs=_outputs(request.get("outputs"), binary_default), id=request_id,
                        parameters=parameters)


def encode_response(response: InferResponse,
                    encode_json: Callable[[Any], bytes] = dumps) -> tuple[bytes, dict[str, str]]:
    """The body and the headers it needs (a binary body carries the JSON header's length).
    `encode_json` writes the JSON part (service.offload.dumps_in_pieces for large ones)."""
    described: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for output in response.outputs:
        array = np.ascontiguousarray(output.data, dtype=OUTPUT_DTYPE)
        entry: dict[str, Any] = {"name": output.name, "datatype": output.datatype, "shape": output.shape}
        if output.binary:
            raw = array.tobytes()
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            entry["data"] = array.ravel()
        described.append(entry)
    body: dict[str, Any] = {"model_name": response.model_name, "model_version": response.model_version,
                            "outputs": described}
    if response.id is not None:
        body["id"] = response.id
    if response.parameters:
        body["parameters"] = response.parameters
    header = encode_json(body)
    if not chunks:
        return header, {"content-type": JSON_CONTENT_TYPE}
    return b"".join([header, *chunks]), {"content-type": BINARY_CONTENT_TYPE, HEADER_LENGTH: str(len(header))}
