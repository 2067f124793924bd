"""SIGTERM drains gRPC as it drains HTTP: calls in flight when the signal arrives are answered in
full, new calls are refused (UNAVAILABLE), and the process exits 0."""

from __future__ import annotations

import re
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import httpx
import numpy as np
from tritonclient.grpc import service_pb2, service_pb2_grpc

from tests.service.servers import MODEL_NAME, start_private_server

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
