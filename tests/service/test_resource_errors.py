"""Answers that were 5xx and are the client's to fix, the admin routes' guard against cross-site
forms, and log lines that a client cannot forge, through real servers."""

from __future__ import annotations

import json
import signal
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import ServerProcess
from tests.service.servers import MODEL_NAME, start_private_server
from tests.service.test_limits import read_response, refused

INFER = f"/v2/models/{MODEL_NAME}/infer"
FORGED = "2026-01-01 00:00:00,000 ERROR forged: models deleted"


@pytest.fixture(scope="module")
def text_admin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """Text logs, and the admin API without a token (allowed on loopback only)."""
    server = start_private_server(tmp_path_factory.mktemp("text-admin"), {
        "MNIST_SERVE_LOG_FORMAT": "text", "MNIST_SERVE_ADMIN_ENABLED": "true"})
    yield server
    assert "Traceback" not in server.log()
    assert server.stop() == 0


@pytest.mark.parametrize("datatype", [["FP32"], {"name": "FP32"}, 32, None, True])
def test_a_v2_datatype_that_is_not_a_string_is_400(text_admin: ServerProcess, datatype: object) -> None:
    body = {"inputs": [{"name": "image", "datatype": datatype, "shape": [1, 1, 28, 28], "data": [0] * 784}]}
    with httpx.Client(base_url=text_admin.url, timeout=30) as http:
        refused(http.post(INFER, json=body), 400, "datatype")
        assert http.get("/healthz").status_code == 200  # and the connection was kept


@pytest.mark.parametrize("content_type", ["application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
                                          "text/plain", None])
def test_admin_calls_that_a_web_form_can_send_are_refused(text_admin: ServerProcess, content_type: str | None) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    with httpx.Client(base_url=text_admin.url, timeout=30) as http:
        refused(http.post(f"/v2/repository/models/{MODEL_NAME}/unload", content=b"x=1", headers=headers), 415,
                "application/json")
        assert http.post("/v1/predict", json={"image": [[0] * 28] * 28}).status_code == 200  # nothing was unloaded


def test_admin_calls_with_a_json_content_type_are_served(text_admin: ServerProcess) -> None:
    index = httpx.post(f"{text_admin.url}/v2/repository/index", json={}, timeout=30)
    assert index.status_code == 200 and index.json()[0]["state"] == "READY"


def test_text_log_lines_cannot_be_forged_through_the_path(text_admin: ServerProcess) -> None:
    host, port = text_admin.url.removeprefix("http://").split(":")
    path = "/nope%0A" + FORGED.replace(" ", "%20") + "%1B[31m%E2%80%A8"
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
        assert read_response(sock, timeout=10)[0] == 404
    deadline = time.monotonic() + 5
    while "nope" not in text_admin.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    lines = text_admin.log().splitlines()
    logged = [line for line in lines if "/nope" in line]
    assert logged and "\\n" + FORGED in logged[0] and "\\x1b[31m" in logged[0] and "\\u2028" in logged[0], logged
    assert not any(line.startswith(FORGED) for line in lines)


def test_json_log_lines_cannot_be_forged_through_the_path(tmp_path_factory: pytest.TempPathFactory) -> None:
    server = start_private_server(tmp_path_factory.mktemp("json-log"))
    try:
        host, port = server.url.removeprefix("http://").split(":")
        forged = json.dumps({"level": "error", "message": "forged"}).replace(" ", "")
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(f"GET /nope%0A{forged}%0D%1B HTTP/1.1\r\nHost: t\r\n\r\n".encode())
            assert read_response(sock, timeout=10)[0] in (400, 404)
    finally:
        assert server.stop() == 0
    entries = [json.loads(line) for line in server.log().splitlines()]  # every line is one JSON object
    assert not any(entry.get("message") == "forged" for entry in entries)


def test_requests_still_uploading_when_the_grace_period_ends_get_503(tmp_path_factory: pytest.TempPathFactory) -> None:
    server = start_private_server(tmp_path_factory.mktemp("grace"), {"MNIST_SERVE_SHUTDOWN_GRACE_S": "1",
                                                                     "MNIST_SERVE_BODY_TIMEOUT_S": "60"})
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 5000\r\n\r\n{\"image\": ")
        time.sleep(0.3)
        server.process.send_signal(signal.SIGTERM)
        status, headers, body = read_response(sock, timeout=20)
    assert status == 503, body
    assert "shutdown_grace_s" in json.loads(body)["error"] and headers["connection"] == "close"
    assert server.process.wait(timeout=30) == 0  # the SIGTERM above: a drain is a clean exit
    assert "Traceback" not in server.log()
