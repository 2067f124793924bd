"""Request bodies -> input batches, and tensors -> response bodies. No HTTP, no models here.

V1 JSON arrays: all JSON integers mean the 0-255 scale, any number written with a decimal
point or exponent means the [0, 1] scale. V2 tensors follow the Open Inference Protocol and
Triton's binary tensor data extension.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from service.errors import BadRequest, PayloadTooLarge, Unprocessable
from service.preprocess import SIZE, image_to_input, mnist_style

ORJSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY


def dumps(content: Any) -> bytes:
    return orjson.dumps(content, option=ORJSON_OPTIONS)


_CONTAINER_TYPES = frozenset({dict, list})  # parsed JSON holds these exact types


def json_depth(value: Any, limit: int) -> int:
    """Nesting depth of parsed JSON, stopping past `limit`. Lists of scalars are scanned at C speed
    (`map(type, ...)`), not walked: a scalar first item must not hide deeper items behind it."""
    depth, level = 0, [value]
    while level:
        depth += 1
        if depth > limit:
            return depth
        children: list[Any] = []
        for item in level:
            if isinstance(item, dict):
                children.extend(v for v in item.values() if isinstance(v, (dict, list)))
            elif isinstance(item, list) and item and (isinstance(item[0], (dict, list))
                                                      or not _CONTAINER_TYPES.isdisjoint(map(type, item))):
                children.extend(v for v in item if isinstance(v, (dict, list)))
        level = children
    return depth


def parse_json(body: bytes, max_depth: int, error: type[BadRequest] | type[Unprocessable] = BadRequest) -> Any:
    if not body.strip():
        raise error("request body is empty; send a JSON object")
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise error(f"request body is not valid JSON: {exc}") from exc
    if json_depth(parsed, max_depth) > max_depth:
        raise error(f"JSON nesting deeper than the max_json_depth limit of {max_depth}")
    return parsed


# ---- V1 -------------------------------------------------------------------------------------

V1_IMAGE_KEYS = ("image", "images", "image_base64", "images_base64")


@dataclass
class InputLimits:
    max_images: int
    max_encoded_bytes: int
    max_pixels: int


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


def decode_base64_image(value: Any, limits: InputLimits, preprocess: bool, where: str) -> np.ndarray:
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
    return image_to_input(data, limits.max_pixels, preprocess, where)


def file_to_image(data: bytes, limits: InputLimits, preprocess: bool, where: str) -> np.ndarray:
    if len(data) > limits.max_encoded_bytes:
        raise PayloadTooLarge(f"{where}: {len(data)} bytes exceeds the max_encoded_image_bytes limit of {limits.max_encoded_bytes}")
    return image_to_input(data, limits.max_pixels, preprocess, where)


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
        images = [decode_base64_image(item, limits, apply, where) for where, item in items]
    else:
        images = [array_to_image(item, where) for where, item in items]
        if apply:
            images = [mnist_style(image) for image in images]
    return ParsedImages(images=np.stack(images), encoded=encoded)


def to_batch(images: np.ndarray) -> np.ndarray:
    """[n, 28, 28] -> the contract's [n, 1, 28, 28] float32, contiguous."""
    return np.ascontiguousarray(images[:, None, :, :], dtype=np.float32)


# ---- V2 -------------------------------------------------------------------------------------

V2_DATATYPES: dict[str, np.dtype] = {
    "FP32": np.dtype("<f4"),
    "FP16": np.dtype("<f2"),
    "FP64": np.dtype("<f8"),
    "UINT8": np.dtype("u1"),
}
HEADER_LENGTH = "Inference-Header-Content-Length"


@dataclass
class RequestedOutput:
    name: str
    binary: bool


@dataclass
class V2Request:
    id: str | None
    batch: np.ndarray  # float32 [n, 1, 28, 28]
    outputs: list[RequestedOutput]
    parameters: dict[str, Any] = field(default_factory=dict)


def _v2_input_tensor(spec: Mapping[str, Any], binary: memoryview, offset: int, input_name: str,
                     input_shape: Sequence[int], max_images: int) -> tuple[np.ndarray, int]:
    name = spec.get("name")
    if name != input_name:
        raise BadRequest(f"unknown input {name!r}; the model's input is {input_name!r}")
    datatype = spec.get("datatype")
    if datatype not in V2_DATATYPES:
        raise BadRequest(f"input {name!r}: datatype {datatype!r} is not supported (use one of {', '.join(V2_DATATYPES)})")
    shape = spec.get("shape")
    if (not isinstance(shape, list) or len(shape) != 1 + len(input_shape)
            or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape)
            or tuple(shape[1:]) != tuple(input_shape) or shape[0] < 1):
        raise BadRequest(f"input {name!r}: shape {shape} does not match [-1, {', '.join(map(str, input_shape))}]")
    if shape[0] > max_images:
        raise PayloadTooLarge(f"input {name!r}: batch of {shape[0]} exceeds the max_images_per_request limit of {max_images}")
    dtype = V2_DATATYPES[datatype]
    count = int(np.prod(shape))
    parameters = spec.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise BadRequest(f"input {name!r}: parameters must be an object")
    if "binary_data_size" in parameters:
        size = parameters["binary_data_size"]
        expected = count * dtype.itemsize
        if not isinstance(size, int) or size != expected:
            raise BadRequest(f"input {name!r}: binary_data_size {size} does not match shape {shape} of {datatype} ({expected} bytes)")
        if offset + size > len(binary):
            raise BadRequest(f"input {name!r}: binary tensor data is truncated: expected {size} bytes, "
                             f"got {len(binary) - offset}")
        array = np.frombuffer(binary[offset : offset + size], dtype=dtype).reshape(shape)
        offset += size
    else:
        if "data" not in spec:
            raise BadRequest(f"input {name!r}: no 'data' and no binary_data_size parameter")
        try:
            array = np.asarray(spec["data"], dtype=dtype if datatype != "UINT8" else None)
        except (ValueError, TypeError, OverflowError):
            raise BadRequest(f"input {name!r}: data must be {datatype} numbers, flat or nested row-major") from None
        if datatype == "UINT8":
            if array.size and (array.dtype.kind not in "iu" or int(array.min()) < 0 or int(array.max()) > 255):
                raise BadRequest(f"input {name!r}: UINT8 data must be integers 0-255")
        if array.size != count:
            raise BadRequest(f"input {name!r}: data has {array.size} values, shape {shape} needs {count}")
        array = array.reshape(shape)
    if datatype == "UINT8":
        return array.astype(np.float32) / np.float32(255.0), offset
    array = array.astype(np.float32, copy=False)
    low, high = float(array.min()), float(array.max())
    if not (math.isfinite(low) and math.isfinite(high)):
        raise BadRequest(f"input {name!r}: values must be finite (NaN or infinity found)")
    if low < 0.0 or high > 1.0:
        raise BadRequest(f"input {name!r}: {datatype} values must be in [0, 1] (found {low:g}..{high:g}); use UINT8 for 0-255")
    return np.ascontiguousarray(array), offset


def _explain_header_error(message: str, header_length: str | None) -> str:
    """Most JSON errors in a binary request come from a missing or wrong header length: say so."""
    if "not valid JSON" not in message:
        return message
    if header_length is None:
        return f"{message}; a body with binary tensor data needs the {HEADER_LENGTH} header"
    return f"{message}; the JSON header is the first {header_length} bytes of the body, per {HEADER_LENGTH}"


# Parameters of Triton extensions this server does not implement: ignoring them would return
# something other than what the client asked for.
UNSUPPORTED_OUTPUT_PARAMETERS = ("classification", "shared_memory_region")


def parse_v2_request(body: bytes, header_length: str | None, input_name: str, input_shape: Sequence[int],
                     output_names: Sequence[str], max_images: int, max_depth: int) -> V2Request:
    if header_length is not None:
        try:
            json_size = int(header_length)
        except ValueError:
            raise BadRequest(f"{HEADER_LENGTH} must be an integer, got {header_length!r}") from None
        if json_size < 0 or json_size > len(body):
            raise BadRequest(f"{HEADER_LENGTH} is {json_size} but the body has only {len(body)} bytes")
        header, binary = body[:json_size], memoryview(body)[json_size:]
    else:
        header, binary = body, memoryview(b"")
    # A tensor's data may nest once per dimension ([n][1][28][28]); those levels do not count
    # against max_json_depth, which bounds the structure around them.
    try:
        request = parse_json(header, max_depth + len(input_shape))
    except BadRequest as exc:
        raise BadRequest(_explain_header_error(exc.message, header_length)) from exc
    if not isinstance(request, dict):
        raise BadRequest("inference request must be a JSON object")
    inputs = request.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise BadRequest(f"'inputs' must be a list holding the one input {input_name!r}")
    batch, used = _v2_input_tensor(inputs[0], binary, 0, input_name, input_shape, max_images)
    if used != len(binary):
        raise BadRequest(f"binary section has {len(binary) - used} bytes beyond the inputs' binary_data_size")

    parameters = request.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise BadRequest("'parameters' must be an object")
    binary_default = bool(parameters.get("binary_data_output", False))
    requested = request.get("outputs")
    outputs: list[RequestedOutput] = []
    if requested is None:
        outputs = [RequestedOutput(name, binary_default) for name in output_names]
    else:
        if not isinstance(requested, list):
            raise BadRequest("'outputs' must be a list of {\"name\": ...} objects")
        for item in requested:
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                raise BadRequest("each requested output must be an object with a 'name'")
            if item["name"] not in output_names:
                raise BadRequest(f"unknown output {item['name']!r}; outputs: {', '.join(output_names)}")
            item_parameters = item.get("parameters") or {}
            if not isinstance(item_parameters, dict):
                raise BadRequest(f"output {item['name']!r}: parameters must be an object")
            unsupported = [key for key in UNSUPPORTED_OUTPUT_PARAMETERS if key in item_parameters]
            if unsupported:
                raise BadRequest(f"output {item['name']!r}: parameter {unsupported[0]!r} is not supported by this "
                                 "server (extensions: binary_tensor_data)")
            outputs.append(RequestedOutput(item["name"], bool(item_parameters.get("binary_data", binary_default))))
    request_id = request.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise BadRequest("'id' must be a string")
    return V2Request(id=request_id, batch=batch, outputs=outputs, parameters=parameters)


def encode_v2_response(model_name: str, model_version: int, request_id: str | None, outputs: Sequence[RequestedOutput],
                       results: Mapping[str, np.ndarray]) -> tuple[bytes, dict[str, str]]:
    """The response body and the headers it needs (binary responses carry the JSON header's length)."""
    described: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for output in outputs:
        array = np.ascontiguousarray(results[output.name], dtype="<f4")
        entry: dict[str, Any] = {"name": output.name, "datatype": "FP32", "shape": list(array.shape)}
        if output.binary:
            raw = array.tobytes()
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            entry["data"] = array.ravel()
        described.append(entry)
    response: dict[str, Any] = {"model_name": model_name, "model_version": str(model_version), "outputs": described}
    if request_id is not None:
        response["id"] = request_id
    header = dumps(response)
    if not chunks:
        return header, {"content-type": "application/json"}
    return header + b"".join(chunks), {"content-type": "application/octet-stream", HEADER_LENGTH: str(len(header))}
