"""The Open Inference Protocol over gRPC against a real server, through the clients people use:
tritonclient.grpc (raw tensors, as it sends them), typed `contents`, KServe's InferenceGRPCClient
(in its own process), and grpcurl-style calls built from server reflection alone. Every answer is
checked against ONNX Runtime run directly, and against the same request over HTTP; every error
is its gRPC status with the message HTTP gives."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from google.protobuf import descriptor_pool, json_format, message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from contract.spec import INPUT_NAME, PROBABILITIES
from tests.conftest import REPO_ROOT, ServerProcess
from tests.service.servers import MODEL_NAME as MODEL
from tests.service.servers import SOURCE_MODEL, start_private_server

TOKEN = "grpc-admin-token"
MAX_BODY_BYTES = 1 << 20
TOLERANCE = 1e-5  # the server batches with one intra-op thread; ONNX Runtime here may sum in another order
INFER = "/inference.GRPCInferenceService/ModelInfer"
LAYER = "conv1"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = start_private_server(tmp_path_factory.mktemp("grpc-server"), {
        "MNIST_SERVE_ADMIN_TOKEN": TOKEN, "MNIST_SERVE_MAX_BODY_BYTES": str(MAX_BODY_BYTES)})
    yield process
    process.stop()


@pytest.fixture(scope="module")
def target(server: ServerProcess) -> str:
    return f"127.0.0.1:{server.env['MNIST_SERVE_GRPC_PORT']}"


@pytest.fixture(scope="module")
def client(target: str) -> Iterator[triton_grpc.InferenceServerClient]:
    connection = triton_grpc.InferenceServerClient(target)
    yield connection
    connection.close()


@pytest.fixture(scope="module")
def http_client(server: ServerProcess) -> Iterator[triton_http.InferenceServerClient]:
    connection = triton_http.InferenceServerClient(server.url.removeprefix("http://"), network_timeout=120.0)
    yield connection
    connection.close()


@pytest.fixture(scope="module")
def channel(target: str) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(target) as opened:
        yield opened


@pytest.fixture(scope="module")
def session() -> ort.InferenceSession:
    return ort.InferenceSession(str(SOURCE_MODEL), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def digits(mnist_test_set: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Eight MNIST test digits as the contract's float32 [8, 1, 28, 28] in [0, 1]."""
    return (mnist_test_set[0][:8].astype(np.float32) / np.float32(255.0))[:, None, :, :]


def onnxruntime(session: ort.InferenceSession, batch: np.ndarray, *outputs: str) -> list[np.ndarray]:
    return session.run(list(outputs), {INPUT_NAME: batch})


def triton_input(module, batch: np.ndarray, datatype: str = "FP32"):
    tensor = module.InferInput(INPUT_NAME, list(batch.shape), datatype)
    if module is triton_http:
        tensor.set_data_from_numpy(batch, binary_data=True)
    else:
        tensor.set_data_from_numpy(batch)
    return tensor


def grpc_error(call) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as raised:
        call()
    return raised.value


def http_error(server: ServerProcess, method: str, path: str, **kwargs) -> tuple[int, str]:
    response = httpx.request(method, server.url + path, timeout=60, **kwargs)
    return response.status_code, response.json()["error"]


# ---- health and metadata ---------------------------------------------------------------------
def test_live_ready_and_server_metadata(client: triton_grpc.InferenceServerClient) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready(MODEL) and client.is_model_ready(MODEL, "1")
    assert not client.is_model_ready("no-such-model") and not client.is_model_ready(MODEL, "99")
    metadata = client.get_server_metadata(as_json=True)
    assert metadata["name"] == "mnist-serve"
    assert metadata["extensions"] == ["binary_tensor_data", "model_configuration", "model_repository"]  # as GET /v2


def test_model_metadata_is_the_http_document_less_parameters(client: triton_grpc.InferenceServerClient,
                                                             server: ServerProcess) -> None:
    over_http = httpx.get(f"{server.url}/v2/models/{MODEL}", timeout=30).json()
    over_grpc = client.get_model_metadata(MODEL, as_json=True)
    for tensor in over_grpc["inputs"] + over_grpc["outputs"]:
        tensor["shape"] = [int(dim) for dim in tensor["shape"]]  # protobuf's JSON writes int64 as strings
    del over_http["parameters"]
    assert over_grpc == over_http


def test_model_config_is_tritons_over_both_protocols(client: triton_grpc.InferenceServerClient,
                                                     http_client: triton_http.InferenceServerClient,
                                                     server: ServerProcess) -> None:
    """tritonclient's get_model_config (perf_analyzer and Triton users read it): the same document
    over HTTP and gRPC, with what a request may carry and the dynamic batcher's settings."""
    over_http = http_client.get_model_config(MODEL)
    over_grpc = client.get_model_config(MODEL, as_json=True)["config"]
    assert over_http["name"] == over_grpc["name"] == MODEL
    assert over_http["platform"] == over_grpc["platform"] == "onnxruntime_onnx"
    assert over_http["max_batch_size"] == over_grpc["max_batch_size"] == 256
    assert over_http["input"] == [{"name": INPUT_NAME, "data_type": "TYPE_FP32", "dims": [1, 28, 28]}]
    assert [(tensor["name"], [int(dim) for dim in tensor["dims"]]) for tensor in over_grpc["input"]] == \
        [(INPUT_NAME, [1, 28, 28])]
    outputs = {tensor["name"]: tensor["dims"] for tensor in over_http["output"]}
    assert outputs["probabilities"] == [10] and outputs["logits"] == [10]
    assert [tensor["name"] for tensor in over_grpc["output"]] == list(outputs)
    batcher = httpx.get(f"{server.url}/v2/models/{MODEL}", timeout=30).json()["parameters"]["max_batch_size"]
    assert over_http["dynamic_batching"]["preferred_batch_size"] == [batcher]
    assert over_grpc["instance_group"][0]["kind"] == "KIND_CPU"
    assert client.get_model_config(MODEL, "1", as_json=True)["config"]["version_policy"] == \
        {"specific": {"versions": ["1"]}}
    assert grpc_error(lambda: client.get_model_config("no-such-model")).status() == "StatusCode.NOT_FOUND"


def test_the_standard_health_service_follows_readiness(channel: grpc.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "inference.GRPCInferenceService"):
        status = health.Check(health_pb2.HealthCheckRequest(service=service)).status
        assert status == health_pb2.HealthCheckResponse.SERVING
    with pytest.raises(grpc.RpcError) as unknown:
        health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"))
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND


# ---- inference -------------------------------------------------------------------------------
def test_tritonclient_raw_tensors_match_onnxruntime_and_http(client: triton_grpc.InferenceServerClient,
                                                             http_client: triton_http.InferenceServerClient,
                                                             session: ort.InferenceSession, digits: np.ndarray) -> None:
    outputs = [PROBABILITIES, LAYER]
    result = client.infer(MODEL, [triton_input(triton_grpc, digits)], request_id="raw-1",
                          outputs=[triton_grpc.InferRequestedOutput(name) for name in outputs])
    binary_outputs = [triton_http.InferRequestedOutput(name, binary_data=True) for name in outputs]
    over_http = http_client.infer(MODEL, [triton_input(triton_http, digits)], outputs=binary_outputs)
    response = result.get_response()
    assert response.id == "raw-1" and response.model_name == MODEL and response.model_version == "1"
    assert len(response.raw_output_contents) == 2  # raw in, raw out: what tritonclient reads
    for name, expected in zip(outputs, onnxruntime(session, digits, *outputs)):
        np.testing.assert_allclose(result.as_numpy(name), expected, atol=TOLERANCE)
        assert result.as_numpy(name).tobytes() == over_http.as_numpy(name).tobytes()  # the same bytes


def test_every_output_when_none_is_named(client: triton_grpc.InferenceServerClient,
                                         session: ort.InferenceSession, digits: np.ndarray) -> None:
    result = client.infer(MODEL, [triton_input(triton_grpc, digits[:2])])
    names = [output.name for output in result.get_response().outputs]
    assert names == [output.name for output in session.get_outputs()]
    np.testing.assert_allclose(result.as_numpy(PROBABILITIES), onnxruntime(session, digits[:2], PROBABILITIES)[0],
                               atol=TOLERANCE)


@pytest.mark.parametrize("datatype", ["UINT8", "FP16", "FP64"])
def test_other_input_datatypes(client: triton_grpc.InferenceServerClient, session: ort.InferenceSession,
                               mnist_test_set: tuple[np.ndarray, np.ndarray], datatype: str) -> None:
    pixels = mnist_test_set[0][:4][:, None, :, :]
    batch = pixels if datatype == "UINT8" else (pixels / 255).astype({"FP16": np.float16, "FP64": np.float64}[datatype])
    result = client.infer(MODEL, [triton_input(triton_grpc, batch, datatype)],
                          outputs=[triton_grpc.InferRequestedOutput(PROBABILITIES)])
    reference = onnxruntime(session, batch.astype(np.float32) / (255 if datatype == "UINT8" else 1), PROBABILITIES)[0]
    np.testing.assert_allclose(result.as_numpy(PROBABILITIES), reference, atol=TOLERANCE)


def test_typed_contents_in_typed_contents_out(channel: grpc.Channel, session: ort.InferenceSession,
                                              digits: np.ndarray) -> None:
    request = service_pb2.ModelInferRequest(model_name=MODEL, id="typed-1")
    tensor = request.inputs.add(name=INPUT_NAME, datatype="FP32", shape=list(digits[:3].shape))
    tensor.contents.fp32_contents.extend(digits[:3].ravel().tolist())
    request.outputs.add(name=PROBABILITIES)
    response = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request)
    assert response.id == "typed-1" and not response.raw_output_contents
    output = response.outputs[0]
    assert (output.name, output.datatype, list(output.shape)) == (PROBABILITIES, "FP32", [3, 10])
    np.testing.assert_allclose(np.asarray(output.contents.fp32_contents, np.float32).reshape(3, 10),
                               onnxruntime(session, digits[:3], PROBABILITIES)[0], atol=TOLERANCE)


def test_reflection_alone_is_enough_to_call_the_server(channel: grpc.Channel, session: ort.InferenceSession,
                                                       digits: np.ndarray) -> None:
    """What grpcurl does: list the services, resolve ModelInfer's types, send a request written as JSON."""
    database = ProtoReflectionDescriptorDatabase(channel)
    assert {"inference.GRPCInferenceService", "grpc.health.v1.Health",
            "grpc.reflection.v1alpha.ServerReflection"} <= set(database.get_services())
    pool = descriptor_pool.DescriptorPool(database)
    method = pool.FindServiceByName("inference.GRPCInferenceService").methods_by_name["ModelInfer"]
    request_type = message_factory.GetMessageClass(method.input_type)
    response_type = message_factory.GetMessageClass(method.output_type)
    request = json_format.ParseDict({
        "model_name": MODEL, "id": "reflected",
        "inputs": [{"name": INPUT_NAME, "datatype": "FP32", "shape": [1, 1, 28, 28],
                    "contents": {"fp32_contents": digits[0].ravel().tolist()}}],
        "outputs": [{"name": PROBABILITIES}]}, request_type())
    call = channel.unary_unary(f"/{method.containing_service.full_name}/{method.name}",
                               request_serializer=request_type.SerializeToString,
                               response_deserializer=response_type.FromString)
    answer = json_format.MessageToDict(call(request), preserving_proto_field_name=True)
    assert answer["id"] == "reflected" and answer["outputs"][0]["shape"] == ["1", "10"]
    np.testing.assert_allclose(np.asarray(answer["outputs"][0]["contents"]["fp32_contents"], np.float32),
                               onnxruntime(session, digits[:1], PROBABILITIES)[0][0], atol=TOLERANCE)


KSERVE_CLIENT = """
import asyncio, json, sys
import numpy as np
from kserve import InferenceGRPCClient, InferInput, InferRequest
from kserve.protocol.infer_type import RequestedOutput

async def main(target, model, path):
    client = InferenceGRPCClient(target, timeout=60)
    batch = np.load(path)
    raw = InferInput("image", list(batch.shape), "FP32")
    raw.set_data_from_numpy(batch)
    typed = InferInput("image", list(batch.shape), "FP32", data=batch.ravel().tolist())
    answers = {"live": await client.is_server_live(), "ready": await client.is_server_ready(),
               "model_ready": await client.is_model_ready(model)}
    for name, tensor in (("raw", raw), ("typed", typed)):
        response = await client.infer(InferRequest(model, [tensor], request_id=name,
                                                   request_outputs=[RequestedOutput("probabilities")]))
        answers[name] = {"id": response.id, "probabilities": response.outputs[0].as_numpy().tolist()}
    await client.close()
    print(json.dumps(answers))

asyncio.run(main(*sys.argv[1:]))
"""


def test_kserve_grpc_client(target: str, session: ort.InferenceSession, digits: np.ndarray, tmp_path: Path) -> None:
    """KServe's client in its own process: its generated protos and Triton's define the same
    inference.* messages, which one protobuf descriptor pool refuses to hold twice."""
    if importlib.util.find_spec("kserve") is None:  # not imported here: see above
        pytest.skip("KServe's Python package (dev extra) is not installed")
    np.save(tmp_path / "batch.npy", digits[:3])
    completed = subprocess.run([sys.executable, "-c", KSERVE_CLIENT, target, MODEL, str(tmp_path / "batch.npy")],
                               capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)
    assert completed.returncode == 0, completed.stderr
    answers = json.loads(completed.stdout.strip().splitlines()[-1])
    assert answers["live"] and answers["ready"] and answers["model_ready"]
    expected = onnxruntime(session, digits[:3], PROBABILITIES)[0]
    for form in ("raw", "typed"):
        assert answers[form]["id"] == form
        np.testing.assert_allclose(np.asarray(answers[form]["probabilities"], np.float32), expected, atol=TOLERANCE)


# ---- errors ----------------------------------------------------------------------------------
def test_unknown_models_and_versions_are_not_found_with_the_http_message(client: triton_grpc.InferenceServerClient,
                                                                         server: ServerProcess,
                                                                         digits: np.ndarray) -> None:
    for name, version in (("no-such-model", ""), (MODEL, "99")):
        error = grpc_error(lambda: client.infer(name, [triton_input(triton_grpc, digits[:1])], model_version=version))
        path = f"/v2/models/{name}" + (f"/versions/{version}" if version else "") + "/infer"
        status, message = http_error(server, "POST", path, json={"inputs": []})
        assert (error.status(), status) == ("StatusCode.NOT_FOUND", 404)
        assert error.message() == message
        assert grpc_error(lambda: client.get_model_metadata(name, version)).status() == "StatusCode.NOT_FOUND"


def test_a_bad_request_is_invalid_argument_with_the_http_message(client: triton_grpc.InferenceServerClient,
                                                                 http_client: triton_http.InferenceServerClient,
                                                                 digits: np.ndarray) -> None:
    wrong_shape = digits[:1, 0]  # [1, 28, 28]
    over_grpc = grpc_error(lambda: client.infer(MODEL, [triton_input(triton_grpc, wrong_shape)]))
    over_http = grpc_error(lambda: http_client.infer(MODEL, [triton_input(triton_http, wrong_shape)]))
    assert over_grpc.status() == "StatusCode.INVALID_ARGUMENT" and over_http.status() == "400"
    assert over_grpc.message() == over_http.message() and "does not match [-1, 1, 28, 28]" in over_grpc.message()
    unknown_output = grpc_error(lambda: client.infer(MODEL, [triton_input(triton_grpc, digits[:1])],
                                                     outputs=[triton_grpc.InferRequestedOutput("no-such-output")]))
    assert unknown_output.status() == "StatusCode.INVALID_ARGUMENT" and "unknown output" in unknown_output.message()


def test_limits_are_resource_exhausted(client: triton_grpc.InferenceServerClient,
                                       http_client: triton_http.InferenceServerClient) -> None:
    too_many = np.zeros((257, 1, 28, 28), np.float32)  # max_images_per_request is 256
    over_grpc = grpc_error(lambda: client.infer(MODEL, [triton_input(triton_grpc, too_many)]))
    over_http = grpc_error(lambda: http_client.infer(MODEL, [triton_input(triton_http, too_many)]))
    assert (over_grpc.status(), over_http.status()) == ("StatusCode.RESOURCE_EXHAUSTED", "413")
    assert over_grpc.message() == over_http.message() and "max_images_per_request" in over_grpc.message()
    too_big = np.zeros((200, 1, 28, 28), np.float64)  # 1.25 MB of tensor: over max_body_bytes (1 MiB) both ways
    assert grpc_error(lambda: client.infer(MODEL, [triton_input(triton_grpc, too_big, "FP64")])).status() == \
        "StatusCode.RESOURCE_EXHAUSTED"
    assert grpc_error(lambda: http_client.infer(MODEL, [triton_input(triton_http, too_big, "FP64")])).status() == "413"


def test_the_repository_extension_needs_the_token(client: triton_grpc.InferenceServerClient,
                                                  server: ServerProcess) -> None:
    for headers in (None, {"authorization": "Bearer wrong"}):
        error = grpc_error(lambda: client.get_model_repository_index(headers=headers))
        status, message = http_error(server, "POST", "/v2/repository/index", headers=headers or {})
        assert (error.status(), status) == ("StatusCode.UNAUTHENTICATED", 401)
        assert error.message() == message


def test_unload_and_load_through_the_repository_extension(client: triton_grpc.InferenceServerClient,
                                                          channel: grpc.Channel, digits: np.ndarray) -> None:
    admin = {"authorization": f"Bearer {TOKEN}"}
    index = client.get_model_repository_index(headers=admin, as_json=True)["models"]
    assert index == [{"name": MODEL, "version": "1", "state": "READY"}]
    health = health_pb2_grpc.HealthStub(channel)
    client.unload_model(MODEL, headers=admin)
    try:
        assert not client.is_model_ready(MODEL) and not client.is_server_ready()
        assert health.Check(health_pb2.HealthCheckRequest()).status == health_pb2.HealthCheckResponse.NOT_SERVING
        error = grpc_error(lambda: client.infer(MODEL, [triton_input(triton_grpc, digits[:1])]))
        assert error.status() == "StatusCode.NOT_FOUND"
    finally:
        client.load_model(MODEL, headers=admin)
    assert client.is_model_ready(MODEL)
    assert health.Check(health_pb2.HealthCheckRequest()).status == health_pb2.HealthCheckResponse.SERVING
    refused = grpc_error(lambda: client.load_model(MODEL, headers=admin, config='{"max_batch_size": 8}'))
    assert refused.status() == "StatusCode.INVALID_ARGUMENT" and "not supported" in refused.message()


# ---- around it: request ids, metrics, the access log -----------------------------------------
def test_request_ids_metrics_and_access_log(channel: grpc.Channel, server: ServerProcess, digits: np.ndarray) -> None:
    request = service_pb2.ModelInferRequest(model_name=MODEL, raw_input_contents=[digits[:1].tobytes()])
    request.inputs.add(name=INPUT_NAME, datatype="FP32", shape=[1, 1, 28, 28])
    _, call = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer.with_call(
        request, metadata=(("x-request-id", "grpc-req-42"),))
    assert ("x-request-id", "grpc-req-42") in tuple(call.trailing_metadata())
    metrics = httpx.get(server.url + "/metrics", timeout=30).text
    assert (f'mnist_serve_requests_total{{endpoint="{INFER}",model="{MODEL}",protocol="grpc",status="OK"}}'
            in metrics)
    assert f'endpoint="{INFER}",model="{MODEL}",protocol="grpc",status="INVALID_ARGUMENT"' in metrics
    assert 'protocol="http",status="200"' in metrics
    latency = f'mnist_serve_request_duration_seconds_count{{endpoint="{INFER}",model="{MODEL}",protocol="grpc"}}'
    assert latency in metrics
    logged = [json.loads(line) for line in server.log().splitlines() if '"grpc-req-42"' in line]
    assert logged and logged[0]["path"] == INFER and logged[0]["status"] == "OK" and logged[0]["model"] == MODEL
