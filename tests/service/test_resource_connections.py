"""Connection hygiene through a real server: the header size limit, the header, body, keep-alive
and send timeouts, the connection cap, and the settings the server refuses to start with. Raw
sockets, so that each client misbehaves exactly as described."""

from __future__ import annotations

import json
import os
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import numpy as np
import orjson
import pytest

from tests.conftest import MODELS_DIR, REPO_ROOT, ServerProcess, free_port
from tests.service.servers import MODEL_NAME, start_private_server
from tests.service.soak_requests import v2_binary
from tests.service.test_limits import read_response

HEADER_TIMEOUT_S = 1.0
BODY_TIMEOUT_S = 1.5
KEEP_ALIVE_TIMEOUT_S = 1.0
SEND_TIMEOUT_S = 1.5
MAX_CONNECTIONS = 40
MAX_HEADER_BYTES = 8192
GUARDED = {
    "MNIST_SERVE_HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S), "MNIST_SERVE_BODY_TIMEOUT_S": str(BODY_TIMEOUT_S),
    "MNIST_SERVE_KEEP_ALIVE_TIMEOUT_S": str(KEEP_ALIVE_TIMEOUT_S), "MNIST_SERVE_SEND_TIMEOUT_S": str(SEND_TIMEOUT_S),
    "MNIST_SERVE_MAX_CONNECTIONS": str(MAX_CONNECTIONS), "MNIST_SERVE_MAX_HEADER_BYTES": str(MAX_HEADER_BYTES),
}
HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = start_private_server(tmp_path_factory.mktemp("connections"), GUARDED)
    yield server
    assert "Traceback" not in server.log()
    assert server.stop() == 0


def connect(server: ServerProcess) -> socket.socket:
    host, port = server.url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def closed_within(sock: socket.socket, seconds: float) -> float:
    """Seconds until the server closed `sock` (reading and dropping anything it sent)."""
    started = time.monotonic()
    sock.settimeout(seconds)
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        pass
    return time.monotonic() - started


def open_fds(server: ServerProcess) -> int:
    return len(os.listdir(f"/proc/{server.process.pid}/fd"))


def test_a_connection_that_sends_nothing_is_closed_after_the_header_timeout(guarded: ServerProcess) -> None:
    with connect(guarded) as sock:
        assert HEADER_TIMEOUT_S * 0.8 < closed_within(sock, 10) < HEADER_TIMEOUT_S + 3


def test_trickled_headers_get_408_at_the_header_timeout(guarded: ServerProcess) -> None:
    with connect(guarded) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n")
        try:
            for index in range(20):  # one header line every 0.2 s: each is progress, none completes the request
                time.sleep(0.2)
                sock.sendall(f"X-Slow-{index}: x\r\n".encode())
        except (BrokenPipeError, ConnectionResetError):
            pass
        status, headers, body = read_response(sock, timeout=5)
    assert status == 408 and headers["connection"] == "close"
    assert "header_timeout_s" in json.loads(body)["error"]
    assert time.monotonic() - started < HEADER_TIMEOUT_S + 3


def send_header_of(server: ServerProcess, size: int) -> tuple[int, bytes]:
    with connect(server) as sock:
        try:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Big: ")
            for start in range(0, size, 1 << 20):
                sock.sendall(b"a" * min(size - start, 1 << 20))
            sock.sendall(b"\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before everything was sent
        status, _, body = read_response(sock, timeout=10)
    return status, body


def test_a_100_mb_header_gets_431_at_once(guarded: ServerProcess) -> None:
    started = time.monotonic()
    status, body = send_header_of(guarded, 100 * 1024 * 1024)
    assert status == 431 and "max_header_bytes" in json.loads(body)["error"]
    assert time.monotonic() - started < 5
    assert send_header_of(guarded, MAX_HEADER_BYTES - 200)[0] == 200  # just under the limit: served


def test_pipelined_requests_are_all_answered(guarded: ServerProcess) -> None:
    """Several small requests in one packet: the header limit counts each request's own bytes."""
    with connect(guarded) as sock:
        sock.sendall(HEALTHZ * 50)
        sock.settimeout(10)
        data = b""
        while data.count(b"HTTP/1.1 200") < 50:
            chunk = sock.recv(65536)
            assert chunk, f"closed after {data.count(b'HTTP/1.1 200')} answers"
            data += chunk


def test_an_idle_keep_alive_connection_is_closed(guarded: ServerProcess) -> None:
    with connect(guarded) as sock:
        sock.sendall(HEALTHZ)
        assert read_response(sock, timeout=5)[0] == 200
        assert closed_within(sock, 10) < KEEP_ALIVE_TIMEOUT_S + 3


def test_a_trickled_body_gets_408_at_the_body_timeout(guarded: ServerProcess) -> None:
    body = orjson.dumps({"image": [[0] * 28] * 28})
    with connect(guarded) as sock:
        sock.sendall(f"POST /v1/predict HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {len(body)}\r\nX-Request-ID: slow-body-1\r\n\r\n".encode() + body[:10])
        started = time.monotonic()
        try:
            for offset in range(10, len(body), 10):
                time.sleep(0.3)
                sock.sendall(body[offset : offset + 10])
        except (BrokenPipeError, ConnectionResetError):
            pass
        status, headers, answer = read_response(sock, timeout=5)
    assert status == 408 and headers["connection"] == "close", answer
    assert headers["x-request-id"] == "slow-body-1"
    assert "body_timeout_s" in json.loads(answer)["error"]
    assert BODY_TIMEOUT_S * 0.8 < time.monotonic() - started < BODY_TIMEOUT_S + 3


def test_the_connection_cap_refuses_clearly_and_recovers(guarded: ServerProcess) -> None:
    baseline = open_fds(guarded)
    held = [connect(guarded) for _ in range(MAX_CONNECTIONS)]
    try:
        time.sleep(0.2)
        response = httpx.get(f"{guarded.url}/healthz", timeout=5)
        assert response.status_code == 503 and response.headers["retry-after"] == "1"
        assert "max_connections" in response.json()["error"]
    finally:
        for sock in held:
            sock.close()
    deadline = time.monotonic() + 10
    while httpx.get(f"{guarded.url}/healthz", timeout=5).status_code != 200:
        assert time.monotonic() < deadline, "the cap did not come back"
        time.sleep(0.1)
    time.sleep(1.5)  # refused connections linger a second for their answer to be read
    assert open_fds(guarded) <= baseline + 2, "connections left open after their clients closed them"


def test_a_client_that_reads_nothing_of_its_response_is_disconnected(guarded: ServerProcess) -> None:
    content, headers = v2_binary(np.zeros((16, 1, 28, 28), np.uint8), None)  # every output: about 10 MB back
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        host, port = guarded.url.removeprefix("http://").split(":")
        sock.connect((host, int(port)))
        sock.sendall((f"POST /v2/models/{MODEL_NAME}/infer HTTP/1.1\r\nHost: t\r\nContent-Length: {len(content)}\r\n"
                      + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n").encode())
        sock.sendall(content)
        time.sleep(SEND_TIMEOUT_S + 2.5)
        received = 0
        sock.settimeout(5)
        try:
            while chunk := sock.recv(1 << 20):
                received += len(chunk)
        except ConnectionResetError:
            pass
    assert received < 10 * 1024 * 1024, "the whole response waited for a client that was not reading"
    assert "send_timeout_s" in guarded.log()
    assert httpx.get(f"{guarded.url}/healthz", timeout=5).status_code == 200


# ---- settings the server cannot honour ------------------------------------------------------

def refused_start(env: dict[str, str], preexec=None) -> subprocess.CompletedProcess:  # noqa: ANN001
    full = {**os.environ, "MNIST_SERVE_MODELS_DIR": str(MODELS_DIR), "MNIST_SERVE_DEVICE": "cpu",
            "MNIST_SERVE_PORT": str(free_port()), **env}
    return subprocess.run([sys.executable, "-m", "service.cli", "serve"], env=full, cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=120, preexec_fn=preexec)


def test_admin_without_a_token_is_refused_on_a_non_loopback_address() -> None:
    result = refused_start({"MNIST_SERVE_ADMIN_ENABLED": "true", "MNIST_SERVE_HOST": "0.0.0.0"})
    assert result.returncode == 2, result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("refusing to start:") and "admin_token" in line and "0.0.0.0" in line, line


def test_max_connections_beyond_the_open_files_hard_limit_is_refused() -> None:
    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (512, 512))

    result = refused_start({"MNIST_SERVE_MAX_CONNECTIONS": "5000", "MNIST_SERVE_HOST": "127.0.0.1"}, low_limit)
    assert result.returncode == 2, result.stderr
    assert "max_connections" in result.stderr and "512" in result.stderr, result.stderr

