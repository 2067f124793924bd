"""gRPC messages <-> the typed V2 requests and responses the REST codec also produces and reads
(service.protocol.v2.types), with the same checks and the same error messages where the error is
the same. Input data comes as typed `contents` or as `raw_input_contents` (what tritonclient
sends); outputs go back raw when the inputs came raw (what tritonclient reads), typed otherwise
(as KServe answers), unless the request's `binary_data_output` parameter says which."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from service.errors import BadRequest
from service.grpc.generated import grpc_service_pb2 as pb
from service.protocol.v2.datatypes import DATATYPES, OUTPUT_DTYPE, lookup
from service.protocol.v2.rest import InputCheck
from service.protocol.v2.types import (
    UNSUPPORTED_OUTPUT_PARAMETERS,
    InferInput,
    InferRequest,
    InferResponse,
    RequestedOutput,
)

RAW_OUTPUTS_PARAMETER = "binary_data_output"
UNSUPPORTED_INPUT_PARAMETERS = ("shared_memory_region",)
# The typed field of InferTensorContents that carries each output datatype (all outputs are FP32).
_OUTPUT_CONTENTS = DATATYPES["FP32"].contents_field


def parameter_value(parameter: pb.InferParameter) -> bool | int | float | str | None:
    choice = parameter.WhichOneof("parameter_choice")
    return None if choice is None else getattr(parameter, choice)


def parameters_from_grpc(parameters: Mapping[str, pb.InferParameter]) -> dict[str, Any]:
    return {key: parameter_value(value) for key, value in parameters.items()}


def parameters_to_grpc(parameters: Mapping[str, Any], target: Any) -> None:
    """Fill a protobuf map<string, InferParameter> from plain values."""
    for key, value in parameters.items():
        if isinstance(value, bool):
            target[key].bool_param = value
        elif isinstance(value, int):
            if value > 2**63 - 1:
                target[key].uint64_param = value
            else:
                target[key].int64_param = value
        elif isinstance(value, float):
            target[key].double_param = value
        else:
            target[key].string_param = str(value)


def _shape(tensor: pb.ModelInferRequest.InferInputTensor) -> list[int]:
    shape = list(tensor.shape)
    if any(dim < 0 for dim in shape):
        raise BadRequest(f"input {tensor.name!r}: shape must be a list of non-negative integers, got {shape!r}")
    return shape


def _input(tensor: pb.ModelInferRequest.InferInputTensor, raw: bytes | None, check: InputCheck) -> InferInput:
    name = tensor.name
    datatype = lookup(tensor.datatype, f"input {name!r}")
    shape = _shape(tensor)
    check(name, datatype.name, shape)
    parameters = parameters_from_grpc(tensor.parameters)
    unsupported = [key for key in UNSUPPORTED_INPUT_PARAMETERS if key in parameters]
    if unsupported:
        raise BadRequest(f"input {name!r}: parameter {unsupported[0]!r} is not supported by this server "
                         "(send the data in contents or raw_input_contents)")
    count = math.prod(shape)
    if raw is not None:
        if tensor.HasField("contents"):
            raise BadRequest(f"input {name!r}: data in both contents and raw_input_contents; send one")
        expected = count * datatype.dtype.itemsize
        if len(raw) != expected:
            raise BadRequest(f"input {name!r}: raw_input_contents holds {len(raw)} bytes; shape {shape} of "
                             f"{datatype.name} needs {expected}")
        return InferInput(name, datatype.name, shape, np.frombuffer(raw, dtype=datatype.dtype).reshape(shape),
                          parameters)
    if datatype.contents_field is None:
        raise BadRequest(f"input {name!r}: {datatype.name} has no typed contents field; send it in raw_input_contents")
    values = getattr(tensor.contents, datatype.contents_field)
    if len(values) != count:
        raise BadRequest(f"input {name!r}: data has {len(values)} values, shape {shape} needs {count}")
    if datatype.scale_0_255:
        array = np.fromiter(values, dtype=np.int64, count=count)
        if array.size and (int(array.min()) < 0 or int(array.max()) > 255):
            raise BadRequest(f"input {name!r}: {datatype.name} data must be integers 0-255")
    else:
        array = np.fromiter(values, dtype=datatype.dtype, count=count)
    return InferInput(name, datatype.name, shape, array.astype(datatype.dtype).reshape(shape), parameters)


def _outputs(outputs: Any) -> list[RequestedOutput] | None:
    if not outputs:
        return None
    requested: list[RequestedOutput] = []
    seen: set[str] = set()
    for output in outputs:
        name = output.name
        if name in seen:
            raise BadRequest(f"output {name!r} is requested more than once")
        seen.add(name)
        parameters = parameters_from_grpc(output.parameters)
        unsupported = [key for key in UNSUPPORTED_OUTPUT_PARAMETERS if key in parameters]
        if unsupported:
            raise BadRequest(f"output {name!r}: parameter {unsupported[0]!r} is not supported by this server "
                             "(extensions: binary_tensor_data)")
        requested.append(RequestedOutput(name, parameters=parameters))
    return requested


def from_grpc(message: pb.ModelInferRequest, check: InputCheck) -> InferRequest:
    """A ModelInferRequest -> InferRequest. `check` sees each input's name, datatype and shape
    before its data is read (the model's checks, as for REST)."""
    if not message.inputs:
        raise BadRequest("'inputs' must be a non-empty list of input tensors")
    raw_contents = message.raw_input_contents
    if raw_contents and len(raw_contents) != len(message.inputs):
        raise BadRequest(f"raw_input_contents has {len(raw_contents)} entries for {len(message.inputs)} inputs; "
                         "send every input raw or none")
    inputs = [_input(tensor, raw_contents[index] if raw_contents else None, check)
              for index, tensor in enumerate(message.inputs)]
    return InferRequest(inputs=inputs, outputs=_outputs(message.outputs), id=message.id or None,
                        parameters=parameters_from_grpc(message.parameters))


def raw_outputs_wanted(message: pb.ModelInferRequest, request: InferRequest) -> bool:
    """Raw outputs when the inputs came raw, unless the request's binary_data_output says otherwise."""
    choice = request.parameters.get(RAW_OUTPUTS_PARAMETER)
    if isinstance(choice, bool):
        return choice
    return bool(message.raw_input_contents)


def to_grpc(response: InferResponse, raw_outputs: bool) -> pb.ModelInferResponse:
    message = pb.ModelInferResponse(model_name=response.model_name, model_version=response.model_version,
                                    id=response.id or "")
    parameters_to_grpc(response.parameters, message.parameters)
    for output in response.outputs:
        array = np.ascontiguousarray(output.data, dtype=OUTPUT_DTYPE)
        tensor = message.outputs.add(name=output.name, datatype=output.datatype, shape=output.shape)
        if raw_outputs:
            message.raw_output_contents.append(array.tobytes())
        else:
            getattr(tensor.contents, _OUTPUT_CONTENTS).extend(array.ravel().tolist())
    return message
