"""The gRPC server's life with the HTTP one: a gRPC port in use refuses the start in one line,
grpc_enabled=false serves HTTP alone, and SIGTERM drains gRPC as it drains HTTP: calls in flight
when the signal arrives are answered in full, new calls are refused (UNAVAILABLE), exit 0."""

from __future__ import annotations

import re
import signal
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import httpx
import numpy as np
from tritonclient.grpc import service_pb2, service_pb2_grpc

from tests.conftest import free_port, start_server
from tests.service.servers import LEAN_SERVER, MODEL_NAME, place_model, start_private_server

CALLS = 6
IMAGES = 256


def infer(target: str, images: np.ndarray) -> service_pb2.ModelInferResponse:
    request = service_pb2.ModelInferRequest(model_name=MODEL_NAME, raw_input_contents=[images.tobytes()])
    request.inputs.add(name="image", datatype="FP32", shape=list(images.shape))
    request.outputs.add(name="probabilities")
    with grpc.insecure_channel(target) as channel:
        return service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=60)


def in_flight(url: str) -> float:
    metrics = httpx.get(url + "/metrics", timeout=10).text
    return float(re.search(r"^mnist_serve_in_flight_requests (\S+)$", metrics, re.M).group(1))


def test_sigterm_finishes_calls_in_flight_and_refuses_new_ones(tmp_path: Path,
                                                               mnist_test_set: tuple[np.ndarray, np.ndarray]) -> None:
    server = start_private_server(tmp_path)
    target = f"127.0.0.1:{server.env['MNIST_SERVE_GRPC_PORT']}"
    images = (mnist_test_set[0][:IMAGES].astype(np.float32) / np.float32(255.0))[:, None, :, :]
    expected = infer(target, images)
    try:
        with ThreadPoolExecutor(CALLS) as pool:
            calls = [pool.submit(infer, target, images) for _ in range(CALLS)]
            deadline = time.monotonic() + 30
            # every call has arrived (the /metrics request counts itself)
            while in_flight(server.url) < CALLS + 1 and time.monotonic() < deadline:
                time.sleep(0.01)
            server.process.send_signal(signal.SIGTERM)
            refused = None
            while refused is None and time.monotonic() < deadline:
                try:
                    infer(target, images[:1])
                except grpc.RpcError as error:
                    refused = error
            answers = [call.result(60) for call in calls]
        assert server.process.wait(60) == 0, server.log()
    finally:
        server.stop()
    assert refused is not None and refused.code() == grpc.StatusCode.UNAVAILABLE
    for answer in answers:
        assert answer.raw_output_contents[0] == expected.raw_output_contents[0]
    assert "gRPC stopped" in server.log()



def test_a_grpc_port_in_use_refuses_the_start(tmp_path: Path) -> None:
    place_model(tmp_path / "models", 1)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = start_server(tmp_path, {**LEAN_SERVER, "MNIST_SERVE_MODELS_DIR": str(tmp_path / "models"),
                                         "MNIST_SERVE_GRPC_PORT": str(port)}, wait_ready=False)
        assert server.process.wait(90) == 2
    assert f"refusing to start: cannot bind 127.0.0.1:{port} for gRPC (grpc_port)" in server.log()


def test_grpc_can_be_turned_off(tmp_path: Path) -> None:
    port = free_port()
    server = start_private_server(tmp_path, {"MNIST_SERVE_GRPC_ENABLED": "false", "MNIST_SERVE_GRPC_PORT": str(port)})
    try:
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", port)) != 0  # nothing listens there
        assert httpx.get(server.url + "/v2/health/ready", timeout=10).status_code == 200
    finally:
        server.stop()
