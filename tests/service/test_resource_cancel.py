"""Cancellation through a real server: work for clients that disconnected is dropped before it is
computed, and the next client is not kept waiting behind it."""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterator

import httpx
import numpy as np
import orjson
import pytest

from tests.conftest import ServerProcess
from tests.service.servers import MODEL_NAME, start_private_server
from tests.service.soak_requests import v2_binary

BLANK = [[0] * 28 for _ in range(28)]
EXPLAIN_IMAGES = 1 + 28 * 28  # patch=1&stride=1


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    # a queue that admits everything the test sends: each request is dropped for its client leaving
    started = start_private_server(tmp_path_factory.mktemp("cancel"), {"MNIST_SERVE_MAX_QUEUE_IMAGES": "20000"})
    yield started
    assert "Traceback" not in started.log()
    assert started.stop() == 0


def inferences(url: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    found = re.search(rf'^mnist_serve_inferences_total{{model="{MODEL_NAME}:1"}} ([0-9.e+]+)$', text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def send_and_leave(url: str, head: str, body: bytes) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)))
    sock.sendall(head.encode() + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    return sock


def settled(url: str) -> float:
    """The inference count once it stops moving."""
    last = inferences(url)
    while True:
        time.sleep(0.5)
        now = inferences(url)
        if now == last:
            return now
        last = now


def test_work_for_clients_that_left_is_dropped_before_compute(server: ServerProcess) -> None:
    before = settled(server.url)
    body = orjson.dumps({"image": BLANK})
    clients = [send_and_leave(server.url, "POST /v1/explain?patch=1&stride=1 HTTP/1.1\r\nHost: t\r\n"
                                          "Content-Type: application/json\r\n", body) for _ in range(8)]
    content, headers = v2_binary(np.zeros((256, 1, 28, 28), np.uint8), ["probabilities"])
    clients += [send_and_leave(server.url, f"POST /v2/models/{MODEL_NAME}/infer HTTP/1.1\r\nHost: t\r\n"
                               + "".join(f"{k}: {v}\r\n" for k, v in headers.items()), content) for _ in range(4)]
    time.sleep(0.3)
    for sock in clients:
        sock.close()
    started = time.monotonic()
    answer = httpx.post(f"{server.url}/v1/predict", json={"image": BLANK}, timeout=30)
    assert answer.status_code == 200
    assert time.monotonic() - started < 3, "the next client waited for work nobody wanted"
    computed = settled(server.url) - before - 1
    requested = 8 * EXPLAIN_IMAGES + 4 * 256
    assert computed < requested / 4, f"{computed:.0f} of {requested} images computed for clients that had left"
    left = [line for line in server.log().splitlines() if '"status":499' in line]
    assert len(left) == len(clients), "the dropped requests are not in the log as 499 (client closed request)"
