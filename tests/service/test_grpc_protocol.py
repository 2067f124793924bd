"""The gRPC front end's pieces without a server: the committed generated modules against the vendored
Triton protos and against what tritonclient ships; ModelInferRequest -> InferRequest with the same
checks and messages as the REST codec; ServiceError -> gRPC status, in one place."""

from __future__ import annotations

import json

import grpc
import numpy as np
import pytest
from google.protobuf import descriptor_pb2

from service.errors import (
    BadRequest,
    Forbidden,
    InferenceFailed,
    ModelNotReady,
    NotFound,
    Overloaded,
    PayloadTooLarge,
    ServiceError,
    ServiceUnavailable,
    Unauthorized,
    Unprocessable,
)
from service.grpc import codec, codegen
from service.grpc.generated import grpc_service_pb2 as pb
from service.grpc.generated import model_config_pb2
from service.grpc.status import DeadlineExceeded, code_of, trailing_metadata
from service.protocol.v2 import model_io
from service.protocol.v2.rest import decode_request
from service.protocol.v2.types import InferOutput, InferResponse

CHECK = model_io.input_check(max_images=4)
MAX_DEPTH = 10
rng = np.random.default_rng(17)


def without_json_names(messages) -> None:
    """protoc's descriptor sets name each field's JSON form; the generated modules leave it out."""
    for message in messages:
        for field in message.field:
            field.ClearField("json_name")
        without_json_names(message.nested_type)


def test_generated_modules_are_the_vendored_protos(tmp_path) -> None:
    pytest.importorskip("grpc_tools", reason="grpcio-tools (dev extra) compiles the vendored protos")
    compiled = descriptor_pb2.FileDescriptorSet.FromString(codegen.descriptor_set(tmp_path / "protos.pb"))
    for file in compiled.file:
        without_json_names(file.message_type)
    by_name = {file.name: file for file in compiled.file}
    for module in (pb, model_config_pb2):
        committed = descriptor_pb2.FileDescriptorProto.FromString(module.DESCRIPTOR.serialized_pb)
        assert by_name[committed.name] == committed, f"{committed.name}: regenerate with python -m service.grpc.codegen"


def test_generated_modules_describe_what_tritonclient_speaks() -> None:
    from tritonclient.grpc import model_config_pb2 as triton_model_config
    from tritonclient.grpc import service_pb2 as triton_service

    assert pb.DESCRIPTOR.serialized_pb == triton_service.DESCRIPTOR.serialized_pb
    assert model_config_pb2.DESCRIPTOR.serialized_pb == triton_model_config.DESCRIPTOR.serialized_pb
    methods = {method.name for method in pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].methods}
    assert {"ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata", "ModelInfer",
            "RepositoryIndex", "RepositoryModelLoad", "RepositoryModelUnload"} <= methods


# ---- ModelInferRequest -> InferRequest -------------------------------------------------------
def grpc_request(datatype: str, shape: list[int], array: np.ndarray | None = None, *, raw: bool = True,
                 name: str = "image", outputs: tuple[str, ...] = (), **contents: list) -> pb.ModelInferRequest:
    message = pb.ModelInferRequest(model_name="cnn-pytorch", id="req-1")
    tensor = message.inputs.add(name=name, datatype=datatype, shape=shape)
    if array is not None and raw:
        message.raw_input_contents.append(array.tobytes())
    for field, values in contents.items():
        getattr(tensor.contents, field).extend(values)
    for output in outputs:
        message.outputs.add(name=output)
    return message


def rest_request(datatype: str, shape: list[int], data: list, name: str = "image",
                 outputs: tuple[str, ...] = ()) -> bytes:
    body: dict = {"inputs": [{"name": name, "datatype": datatype, "shape": shape, "data": data}]}
    if outputs:
        body["outputs"] = [{"name": output} for output in outputs]
    return json.dumps(body).encode()


def test_typed_and_raw_contents_give_the_same_batch() -> None:
    images = rng.random((2, 1, 28, 28), dtype=np.float32)
    raw = codec.from_grpc(grpc_request("FP32", [2, 1, 28, 28], images), CHECK)
    typed = codec.from_grpc(grpc_request("FP32", [2, 1, 28, 28], raw=False, fp32_contents=images.ravel().tolist()),
                            CHECK)
    assert raw.id == typed.id == "req-1"
    np.testing.assert_array_equal(model_io.request_batch(raw), images)
    np.testing.assert_array_equal(model_io.request_batch(typed), images)


@pytest.mark.parametrize("datatype, dtype, field", [("FP16", "<f2", None), ("FP64", "<f8", "fp64_contents"),
                                                    ("UINT8", "u1", "uint_contents")])
def test_every_input_datatype_is_read_as_over_rest(datatype: str, dtype: str, field: str | None) -> None:
    pixels = rng.integers(0, 256, (1, 1, 28, 28)).astype(np.uint8)
    array = pixels.astype(dtype) if datatype == "UINT8" else (pixels / 255).astype(dtype)
    expected = model_io.request_batch(decode_request(rest_request(datatype, [1, 1, 28, 28], array.ravel().tolist()),
                                                     None, MAX_DEPTH, CHECK))
    np.testing.assert_array_equal(model_io.request_batch(codec.from_grpc(grpc_request(datatype, [1, 1, 28, 28], array),
                                                                         CHECK)), expected)
    if field is not None:
        typed = grpc_request(datatype, [1, 1, 28, 28], raw=False, **{field: array.ravel().tolist()})
        np.testing.assert_array_equal(model_io.request_batch(codec.from_grpc(typed, CHECK)), expected)


ZEROS = [0.0] * 784
# The same mistake sent over REST (JSON data) and gRPC (typed contents): the same message.
SAME_ERRORS = [
    ("unknown input", dict(datatype="FP32", shape=[1, 1, 28, 28], data=ZEROS, name="pixels"), "unknown input"),
    ("datatype", dict(datatype="INT32", shape=[1, 1, 28, 28], data=[0] * 784), "is not supported"),
    ("shape", dict(datatype="FP32", shape=[1, 28, 28], data=ZEROS), "does not match"),
    ("negative dimension", dict(datatype="FP32", shape=[-1, 1, 28, 28], data=ZEROS), "non-negative"),
    ("too many images", dict(datatype="FP32", shape=[5, 1, 28, 28], data=ZEROS * 5), "max_images_per_request"),
    ("value count", dict(datatype="FP32", shape=[1, 1, 28, 28], data=ZEROS[:-1]), "shape [1, 1, 28, 28] needs 784"),
    ("UINT8 range", dict(datatype="UINT8", shape=[1, 1, 28, 28], data=[300] * 784), "integers 0-255"),
    ("FP32 range", dict(datatype="FP32", shape=[1, 1, 28, 28], data=[2.0] * 784), "must be in [0, 1]"),
    ("repeated output", dict(datatype="FP32", shape=[1, 1, 28, 28], data=ZEROS, outputs=("logits", "logits")),
     "requested more than once"),
]
CONTENTS = {"FP32": "fp32_contents", "UINT8": "uint_contents", "INT32": "int_contents"}


@pytest.mark.parametrize("case, spec, fragment", SAME_ERRORS, ids=[case[0] for case in SAME_ERRORS])
def test_a_mistake_gets_the_message_rest_gives(case: str, spec: dict, fragment: str) -> None:
    def rest() -> None:
        model_io.request_batch(decode_request(rest_request(**spec), None, MAX_DEPTH, CHECK))

    def over_grpc() -> None:
        shape = [max(dim, 0) for dim in spec["shape"]] if case != "negative dimension" else spec["shape"]
        message = grpc_request(spec["datatype"], shape, raw=False, name=spec.get("name", "image"),
                               outputs=spec.get("outputs", ()), **{CONTENTS[spec["datatype"]]: spec["data"]})
        model_io.request_batch(codec.from_grpc(message, CHECK))

    with pytest.raises(ServiceError) as over_rest:
        rest()
    with pytest.raises(ServiceError) as over_grpc_error:
        over_grpc()
    assert fragment in over_rest.value.message
    assert over_grpc_error.value.message == over_rest.value.message
    assert type(over_grpc_error.value) is type(over_rest.value)


@pytest.mark.parametrize("message, fragment", [
    (grpc_request("FP32", [1, 1, 28, 28], np.zeros(783, np.float32)), "raw_input_contents holds 3132 bytes"),
    (grpc_request("FP16", [1, 1, 28, 28], raw=False), "FP16 has no typed contents field"),
    (pb.ModelInferRequest(model_name="m"), "non-empty list of input tensors"),
])
def test_mistakes_only_grpc_can_make_are_400s(message: pb.ModelInferRequest, fragment: str) -> None:
    with pytest.raises(BadRequest, match=fragment.replace("[", r"\[")):
        codec.from_grpc(message, CHECK)


def test_raw_and_typed_data_for_one_input_is_refused() -> None:
    message = grpc_request("FP32", [1, 1, 28, 28], np.zeros((1, 1, 28, 28), np.float32))
    message.inputs[0].contents.fp32_contents.extend(ZEROS)
    with pytest.raises(BadRequest, match="both contents and raw_input_contents"):
        codec.from_grpc(message, CHECK)


def test_parameters_round_trip_and_choose_the_output_form() -> None:
    message = grpc_request("FP32", [1, 1, 28, 28], np.zeros((1, 1, 28, 28), np.float32))
    for key, value in {"flag": True, "count": -3, "big": 2**64 - 1, "ratio": 0.5, "note": "x"}.items():
        codec.parameters_to_grpc({key: value}, message.parameters)
    request = codec.from_grpc(message, CHECK)
    assert request.parameters == {"flag": True, "count": -3, "big": 2**64 - 1, "ratio": 0.5, "note": "x"}
    assert codec.raw_outputs_wanted(message, request)  # raw in, raw out
    message.parameters["binary_data_output"].bool_param = False
    assert not codec.raw_outputs_wanted(message, codec.from_grpc(message, CHECK))


def test_responses_carry_raw_or_typed_outputs() -> None:
    probabilities = rng.random((2, 10), dtype=np.float32)
    response = InferResponse("cnn-pytorch", "1", [InferOutput("probabilities", "FP32", [2, 10], probabilities)], id="7")
    raw = codec.to_grpc(response, raw_outputs=True)
    assert raw.id == "7" and raw.model_version == "1" and list(raw.outputs[0].shape) == [2, 10]
    np.testing.assert_array_equal(np.frombuffer(raw.raw_output_contents[0], "<f4").reshape(2, 10), probabilities)
    typed = codec.to_grpc(response, raw_outputs=False)
    assert not typed.raw_output_contents
    np.testing.assert_array_equal(np.asarray(typed.outputs[0].contents.fp32_contents, np.float32).reshape(2, 10),
                                  probabilities)


# ---- statuses ----------------------------------------------------------------------------------
@pytest.mark.parametrize("error, code", [
    (BadRequest("x"), grpc.StatusCode.INVALID_ARGUMENT),
    (Unprocessable("x"), grpc.StatusCode.INVALID_ARGUMENT),
    (Unauthorized("x"), grpc.StatusCode.UNAUTHENTICATED),
    (Forbidden("x"), grpc.StatusCode.PERMISSION_DENIED),
    (NotFound("x"), grpc.StatusCode.NOT_FOUND),
    (PayloadTooLarge("x"), grpc.StatusCode.RESOURCE_EXHAUSTED),
    (Overloaded("x"), grpc.StatusCode.RESOURCE_EXHAUSTED),
    (ServiceUnavailable("x"), grpc.StatusCode.UNAVAILABLE),
    (ModelNotReady("x"), grpc.StatusCode.UNAVAILABLE),
    (InferenceFailed("x"), grpc.StatusCode.INTERNAL),
    (DeadlineExceeded("x"), grpc.StatusCode.DEADLINE_EXCEEDED),
    (ServiceError("x"), grpc.StatusCode.INTERNAL),
])
def test_each_service_error_has_one_grpc_status(error: ServiceError, code: grpc.StatusCode) -> None:
    assert code_of(error) == code


def test_error_headers_become_trailing_metadata() -> None:
    assert trailing_metadata(Overloaded("full", retry_after=3)) == (("retry-after", "3"),)
    assert trailing_metadata(Unauthorized("no")) == (("www-authenticate", "Bearer"),)
