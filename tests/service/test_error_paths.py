"""Error paths that need a part of the engine to fail on cue, through the app in this process:
an unexpected exception, a model that fails to compute, a full queue, a draining server. Every
one is a JSON error with the request id and the security headers, and is logged with the id."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from starlette.testclient import TestClient

from service.dataplane import DataPlane
from tests.service.conftest import in_process_app

BLANK = {"image": [[0] * 28 for _ in range(28)]}


@pytest.fixture
def client(lenet_models: Path) -> Iterator[TestClient]:
    with in_process_app(lenet_models, max_queue_size=1) as test_client:
        yield test_client


def assert_json_error(response, status: int, fragment: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert list(response.json()) == ["error"] and fragment in response.json()["error"]
    assert response.headers["x-request-id"]
    assert response.headers["x-content-type-options"] == "nosniff"


def test_an_unexpected_exception_is_a_logged_500_with_the_request_id(client: TestClient, monkeypatch,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    def broken(*args, **kwargs):
        raise RuntimeError("a bug, not the client's fault")

    monkeypatch.setattr(DataPlane, "describe_latest", broken)
    with caplog.at_level(logging.ERROR):
        response = client.get("/v1/models", headers={"X-Request-ID": "bug-1"})
    assert_json_error(response, 500, "internal server error")
    assert response.headers["x-request-id"] == "bug-1" and "bug-1" in response.json()["error"]
    assert "a bug" not in response.text  # no internals in the answer
    assert any("unhandled error" in record.getMessage() and record.exc_info for record in caplog.records)


def test_a_model_that_fails_to_compute_is_a_500_not_a_retryable_503(client: TestClient, monkeypatch) -> None:
    model = client.app.state.registry.get("lenet-pytorch")

    def failing(batch: np.ndarray, outputs) -> dict:
        raise RuntimeError("ONNX Runtime failed")

    monkeypatch.setattr(model.batcher, "_run", failing)
    response = client.post("/v1/predict", json=BLANK)
    assert_json_error(response, 500, "inference failed on lenet-pytorch:1")
    assert "retry-after" not in response.headers


def test_a_full_queue_is_a_503_with_retry_after(client: TestClient, monkeypatch) -> None:
    model = client.app.state.registry.get("lenet-pytorch")
    release = threading.Event()
    real_run = model.batcher._run

    def held(batch: np.ndarray, outputs) -> dict:
        release.wait(10)
        return real_run(batch, outputs)

    monkeypatch.setattr(model.batcher, "_run", held)
    results: list[int] = []
    first = threading.Thread(target=lambda: results.append(client.post("/v1/predict", json=BLANK).status_code))
    second = threading.Thread(target=lambda: results.append(client.post("/v1/predict", json=BLANK).status_code))
    first.start()
    while model.batcher.busy == 0:  # the first request is computing, held
        threading.Event().wait(0.01)
    second.start()
    while model.batcher.queue_depth == 0:  # the second waits in the queue: it is full now
        threading.Event().wait(0.01)
    response = client.post("/v1/predict", json=BLANK)
    release.set()
    first.join()
    second.join()
    assert_json_error(response, 503, "max_queue_size")
    assert response.headers["retry-after"] == "1"
    assert results == [200, 200]


def test_a_draining_server_is_not_ready(client: TestClient) -> None:
    assert client.get("/readyz").status_code == 200
    client.app.state.registry.draining = True
    try:
        assert_json_error(client.get("/readyz"), 503, "shutting down")
        assert client.get("/v2/health/ready").status_code == 503
    finally:
        client.app.state.registry.draining = False


def test_unknown_paths_and_methods_are_json_errors(client: TestClient) -> None:
    assert_json_error(client.get("/no/such/path"), 404, "Not Found")
    assert_json_error(client.delete("/v1/predict"), 405, "Method Not Allowed")
