"""gRPC error paths that need a part of the engine to fail or wait on cue: the app in this process
(its lifespan on a TestClient's event loop) with the gRPC front end started on that same loop and
a real port, called by a real gRPC client. An unexpected exception, a compute failure, a full
queue, a deadline that passes while the request waits, a draining server."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from starlette.testclient import TestClient
from tritonclient.grpc import service_pb2, service_pb2_grpc

from service.dataplane import DataPlane
from service.grpc.frontend import GrpcFrontEnd
from tests.conftest import free_port
from tests.service.conftest import in_process_app

MODEL = "lenet-pytorch"


class Served:
    def __init__(self, client: TestClient, stub: service_pb2_grpc.GRPCInferenceServiceStub, channel: grpc.Channel):
        self.client = client
        self.stub = stub
        self.channel = channel

    @property
    def batcher(self):
        return self.client.app.state.registry.get(MODEL).batcher


@pytest.fixture
def served(lenet_models: Path) -> Iterator[Served]:
    with in_process_app(lenet_models, max_queue_size=1, grpc_port=free_port()) as client:
        state = client.app.state
        front = GrpcFrontEnd(state.settings, state.dataplane, state.repository, state.metrics, state.body_budget)
        port = client.portal.call(front.start)
        try:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                yield Served(client, service_pb2_grpc.GRPCInferenceServiceStub(channel), channel)
        finally:
            client.portal.call(front.stop)


def blank_request(images: int = 1) -> service_pb2.ModelInferRequest:
    request = service_pb2.ModelInferRequest(model_name=MODEL,
                                            raw_input_contents=[np.zeros((images, 1, 28, 28), np.float32).tobytes()])
    request.inputs.add(name="image", datatype="FP32", shape=[images, 1, 28, 28])
    request.outputs.add(name="probabilities")
    return request


def rpc_error(call, *args, **kwargs) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as raised:
        call(*args, **kwargs)
    return raised.value


def hold_compute(served: Served, monkeypatch) -> tuple[threading.Event, list[int]]:
    """Every batch waits for the returned event; the list records each computed batch's size."""
    release = threading.Event()
    computed: list[int] = []
    real_run = served.batcher._run

    def held(batch: np.ndarray, outputs) -> dict:
        release.wait(10)
        computed.append(len(batch))
        return real_run(batch, outputs)

    monkeypatch.setattr(served.batcher, "_run", held)
    return release, computed


def wait_until(condition) -> None:
    for _ in range(1000):
        if condition():
            return
        threading.Event().wait(0.01)
    raise AssertionError("condition not reached within 10 s")


def test_an_unexpected_exception_is_a_logged_internal_with_the_request_id(served: Served, monkeypatch,
                                                                         caplog: pytest.LogCaptureFixture) -> None:
    def broken(*args, **kwargs):
        raise RuntimeError("a bug, not the client's fault")

    monkeypatch.setattr(DataPlane, "describe", broken)
    with caplog.at_level(logging.ERROR):
        error = rpc_error(served.stub.ModelMetadata, service_pb2.ModelMetadataRequest(name=MODEL),
                          metadata=(("x-request-id", "bug-7"),))
    assert error.code() == grpc.StatusCode.INTERNAL
    assert error.details() == "internal server error (request id bug-7)"  # no internals in the answer
    assert ("x-request-id", "bug-7") in tuple(error.trailing_metadata())
    assert any("unhandled error in gRPC" in record.getMessage() and record.exc_info for record in caplog.records)


def test_a_model_that_fails_to_compute_is_internal(served: Served, monkeypatch) -> None:
    def failing(batch: np.ndarray, outputs) -> dict:
        raise RuntimeError("ONNX Runtime failed")

    monkeypatch.setattr(served.batcher, "_run", failing)
    error = rpc_error(served.stub.ModelInfer, blank_request())
    assert (error.code(), error.details()) == (grpc.StatusCode.INTERNAL, f"inference failed on {MODEL}:1")


def test_a_full_queue_is_resource_exhausted_with_retry_after(served: Served, monkeypatch) -> None:
    release, computed = hold_compute(served, monkeypatch)
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(served.stub.ModelInfer, blank_request())
        wait_until(lambda: served.batcher.busy == 1)  # computing, held
        second = pool.submit(served.stub.ModelInfer, blank_request())
        wait_until(lambda: served.batcher.queue_depth == 1)  # waiting: the queue (max_queue_size 1) is full
        error = rpc_error(served.stub.ModelInfer, blank_request())
        release.set()
        assert first.result(30).outputs[0].name == second.result(30).outputs[0].name == "probabilities"
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "max_queue_size" in error.details()
    assert ("retry-after", "1") in tuple(error.trailing_metadata())
    assert computed == [1, 1]


def test_a_call_whose_deadline_passes_in_the_queue_is_dropped_before_compute(served: Served, monkeypatch) -> None:
    release, computed = hold_compute(served, monkeypatch)
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(served.stub.ModelInfer, blank_request(1))
        wait_until(lambda: served.batcher.busy == 1)
        error = rpc_error(served.stub.ModelInfer, blank_request(3), timeout=0.3)  # queued behind the held batch
        assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        release.set()
        first.result(30)
    # the same request with time to spare is computed, so the 3-image batch missing above was dropped
    assert served.stub.ModelInfer(blank_request(2), timeout=30).outputs[0].shape == [2, 10]
    assert computed == [1, 2]
    metrics = served.client.get("/metrics").text
    assert 'endpoint="/inference.GRPCInferenceService/ModelInfer",model="lenet-pytorch",protocol="grpc",' \
           'status="DEADLINE_EXCEEDED"} 1.0' in metrics


def test_a_draining_server_is_not_serving_and_unavailable(served: Served) -> None:
    health = health_pb2_grpc.HealthStub(served.channel)
    assert served.stub.ServerReady(service_pb2.ServerReadyRequest()).ready
    served.client.app.state.registry.draining = True
    try:
        assert not served.stub.ServerReady(service_pb2.ServerReadyRequest()).ready
        assert health.Check(health_pb2.HealthCheckRequest()).status == health_pb2.HealthCheckResponse.NOT_SERVING
        served.client.portal.call(served.batcher.drain, 5)
        error = rpc_error(served.stub.ModelInfer, blank_request())
        assert (error.code(), error.details()) == (grpc.StatusCode.UNAVAILABLE, f"model {MODEL}:1 is shutting down")
    finally:
        served.client.app.state.registry.draining = False


def test_the_repository_extension_is_not_found_when_disabled(served: Served) -> None:
    error = rpc_error(served.stub.RepositoryIndex, service_pb2.RepositoryIndexRequest())
    assert error.code() == grpc.StatusCode.NOT_FOUND and "model repository API is disabled" in error.details()


def test_messages_in_flight_count_against_the_servers_pending_body_bytes_with_http_bodies(served: Served) -> None:
    """The HTTP middleware and the gRPC interceptor share one budget: while others hold it all, a
    call is RESOURCE_EXHAUSTED with HTTP's message; once they are done it is served, and what it
    held is given back."""
    budget = served.client.app.state.body_budget
    budget.held = budget.limit  # HTTP bodies being read hold the whole budget
    error = rpc_error(served.stub.ModelInfer, blank_request())
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert f"the max_pending_body_bytes limit is {budget.limit}; retry later" in error.details()
    assert dict(error.trailing_metadata())["retry-after"] == "1"
    budget.held = 0
    served.stub.ModelInfer(blank_request(4))
    assert budget.held == 0
