"""Every input limit through a real server: the status a client sees and an {"error"} message
that names the limit or the field. Also the security headers, request ids, CORS and the admin
routes' guard. The limits are set small here so that each check is cheap."""

from __future__ import annotations

import base64
import gzip
import json
import socket
import time
from collections.abc import Iterator

import httpx
import numpy as np
import orjson
import pytest

from tests.conftest import ServerProcess
from tests.service.payloads import decompression_bomb, encode_png
from tests.service.servers import MODEL_NAME, start_private_server

MAX_BODY_BYTES = 256 * 1024
MAX_IMAGES = 4
MAX_ENCODED_BYTES = 64 * 1024
MAX_PIXELS = 1_000_000
MAX_PARTS = 8
MAX_DEPTH = 6
LIMITED = {
    "MNIST_SERVE_MAX_BODY_BYTES": str(MAX_BODY_BYTES),
    "MNIST_SERVE_MAX_IMAGES_PER_REQUEST": str(MAX_IMAGES),
    "MNIST_SERVE_MAX_ENCODED_IMAGE_BYTES": str(MAX_ENCODED_BYTES),
    "MNIST_SERVE_MAX_IMAGE_PIXELS": str(MAX_PIXELS),
    "MNIST_SERVE_MAX_MULTIPART_PARTS": str(MAX_PARTS),
    "MNIST_SERVE_MAX_JSON_DEPTH": str(MAX_DEPTH),
    "MNIST_SERVE_ACCESS_LOG": "true",  # off by default (errors are always logged); the log test reads 200s too
}
ADMIN_TOKEN = "s3cret-token"
ORIGIN = "http://example.test"
PREDICT = "/v1/predict"
INFER = f"/v2/models/{MODEL_NAME}/infer"
BLANK = [[0] * 28 for _ in range(28)]


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """Small limits, admin and CORS left at their defaults (off)."""
    server = start_private_server(tmp_path_factory.mktemp("limits"), LIMITED)
    yield server
    assert httpx.get(f"{server.url}/healthz", timeout=5).status_code == 200, "the server died under the tests"
    assert "Traceback" not in server.log()
    assert server.stop() == 0


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """An admin token and one allowed CORS origin."""
    server = start_private_server(tmp_path_factory.mktemp("guarded"), {
        "MNIST_SERVE_ADMIN_TOKEN": ADMIN_TOKEN, "MNIST_SERVE_CORS_ORIGINS": json.dumps([ORIGIN])})
    yield server
    assert server.stop() == 0


@pytest.fixture
def client(limited: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=limited.url, timeout=15) as http:
        yield http


def refused(response: httpx.Response, status: int, *words: str) -> str:
    """Assert a clean error: the status, a JSON body with only "error", naming each of `words`."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}, body
    message = body["error"]
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"
    assert "Traceback" not in message and 'File "' not in message and " at 0x" not in message
    return message


def v2_binary(batch: np.ndarray, datatype: str = "FP32", cut: int = 0) -> tuple[bytes, dict[str, str]]:
    raw = batch.tobytes()
    header = orjson.dumps({"inputs": [{"name": "image", "datatype": datatype, "shape": list(batch.shape),
                                       "parameters": {"binary_data_size": len(raw)}}]})
    return header + raw[: len(raw) - cut], {"Inference-Header-Content-Length": str(len(header)),
                                            "Content-Type": "application/octet-stream"}


def v2_json(data: object, shape: list[int], datatype: str = "UINT8") -> dict[str, object]:
    return {"inputs": [{"name": "image", "datatype": datatype, "shape": shape, "data": data}]}


def png_part(data: bytes | None = None) -> tuple[str, tuple[str, bytes, str]]:
    """A multipart `file` part: the given bytes, or a blank 28x28 PNG."""
    return "file", ("digit.png", data if data is not None else encode_png(np.zeros((28, 28), np.uint8)), "image/png")


# ---- raw HTTP, to control how the body is sent -------------------------------------------

def read_response(sock: socket.socket, timeout: float) -> tuple[int, dict[str, str], bytes]:
    """Read one HTTP/1.1 response (status, headers, body by Content-Length) from a raw socket."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"connection closed before a response: {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(lines[0].split()[1]), headers, body


def open_request(url: str, head: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.sendall(head.encode("latin-1"))
    return sock


# ---- the request body --------------------------------------------------------------------

def test_declared_content_length_over_the_limit_is_refused_before_any_body_is_sent(limited: ServerProcess) -> None:
    sock = open_request(limited.url, f"POST {PREDICT} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
                                     f"Content-Length: {10**9}\r\n\r\n")
    with sock:
        status, headers, body = read_response(sock, timeout=10)
    assert status == 413
    assert "max_body_bytes" in json.loads(body)["error"]
    assert headers.get("x-request-id")


def test_a_streamed_body_is_cut_off_at_the_limit_without_being_buffered(limited: ServerProcess) -> None:
    """Chunked upload with no Content-Length, and the client never finishes the body: a server
    that buffered it all before checking would wait for ever; this one answers 413 as soon as
    the limit is passed."""
    sock = open_request(limited.url, f"POST {PREDICT} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
                                     "Transfer-Encoding: chunked\r\n\r\n")
    chunk = b'{"image_base64": "' + b"A" * (32 * 1024)
    sent = 0
    with sock:
        sock.settimeout(10)
        while sent <= MAX_BODY_BYTES + len(chunk):
            try:
                sock.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            except (BrokenPipeError, ConnectionResetError):
                break  # the server has answered and closed: what the test wants
            sent += len(chunk)
        status, _, body = read_response(sock, timeout=10)  # no terminating chunk was ever sent
    assert status == 413
    assert "max_body_bytes" in json.loads(body)["error"]


MULTIPART_FILE_HEAD = (b'--xx\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n'
                       b"Content-Type: image/png\r\n\r\n")


@pytest.mark.parametrize(("path", "content_type", "head"), [
    (PREDICT, "application/json", b'{"images_base64": ["'),
    (PREDICT, "multipart/form-data; boundary=xx", MULTIPART_FILE_HEAD),
    (INFER, "application/json", b'{"inputs": [{"name": "image", "data": ['),
], ids=["v1-json", "v1-multipart", "v2"])
def test_a_large_streamed_body_gets_413_and_the_server_stays_usable(client: httpx.Client, path: str, content_type: str,
                                                                     head: bytes) -> None:
    def body() -> Iterator[bytes]:
        yield head
        for _ in range(64):  # 4 MB, 16 times the limit, without a Content-Length
            yield b"A" * 65536

    refused(client.post(path, content=body(), headers={"Content-Type": content_type}), 413, "max_body_bytes")
    assert client.post(PREDICT, json={"image": BLANK}).status_code == 200


def test_a_body_just_under_the_limit_is_read(client: httpx.Client) -> None:
    padding = " " * (MAX_BODY_BYTES - 2000)
    response = client.post(PREDICT, content=orjson.dumps({"image": BLANK}) + padding.encode(),
                           headers={"Content-Type": "application/json"})
    assert response.status_code == 200, response.text


def test_compressed_bodies_obey_the_limit_once_inflated(client: httpx.Client) -> None:
    """A gzip bomb: 10 MB of spaces compress to ~10 KB, well under max_body_bytes, and must not
    be inflated past the limit."""
    bomb = gzip.compress(b"{" + b" " * (10 * 1024 * 1024) + b"}")
    assert len(bomb) < MAX_BODY_BYTES
    for path in (PREDICT, INFER):
        refused(client.post(path, content=bomb, headers={"Content-Type": "application/json", "Content-Encoding": "gzip"}),
                413, "max_body_bytes")
    fine = client.post(PREDICT, content=gzip.compress(orjson.dumps({"image": BLANK})),
                       headers={"Content-Type": "application/json", "Content-Encoding": "gzip"})
    assert fine.status_code == 200, fine.text
    refused(client.post(PREDICT, content=gzip.compress(b'{"image": [[0]]}')[:-8],
                        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"}), 400, "gzip")
    refused(client.post(PREDICT, content=b"{}", headers={"Content-Type": "application/json", "Content-Encoding": "br"}),
            415, "Content-Encoding")


@pytest.mark.parametrize("content", [b"", b"   "])
def test_empty_json_bodies(client: httpx.Client, content: bytes) -> None:
    refused(client.post(PREDICT, content=content, headers={"Content-Type": "application/json"}), 400, "empty")
    refused(client.post(INFER, content=content, headers={"Content-Type": "application/json"}), 400, "empty")


def test_empty_and_boundaryless_multipart_bodies(client: httpx.Client) -> None:
    refused(client.post(PREDICT, content=b"", headers={"Content-Type": "multipart/form-data; boundary=x"}), 422, "'file'")
    refused(client.post(PREDICT, content=b"abc", headers={"Content-Type": "multipart/form-data"}), 400, "multipart", "boundary")


@pytest.mark.parametrize("content_type", ["text/plain", "application/xml", "image/png",
                                          "application/x-www-form-urlencoded", None])
def test_wrong_content_types_get_415(client: httpx.Client, content_type: str | None) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    message = refused(client.post(PREDICT, content=orjson.dumps({"image": BLANK}), headers=headers), 415, "Content-Type")
    assert "application/json" in message and "multipart/form-data" in message


# ---- JSON ----------------------------------------------------------------------------------

@pytest.mark.parametrize("content", [b'{"image": NaN}', b'{"image": [[Infinity]]}', b'{"image": [[1e400]]}',
                                     b'{"image": [[-1e999]]}', b'{"image": ', b"\xff\xfe"])
def test_nan_infinity_and_malformed_json_are_invalid_json(client: httpx.Client, content: bytes) -> None:
    refused(client.post(PREDICT, content=content, headers={"Content-Type": "application/json"}), 400, "not valid JSON")


def test_json_nesting_deeper_than_the_limit(client: httpx.Client) -> None:
    deep: object = 1
    for _ in range(MAX_DEPTH + 1):
        deep = {"a": deep}
    refused(client.post(PREDICT, json={"image": deep}), 400, "max_json_depth", str(MAX_DEPTH))
    refused(client.post(PREDICT, json={"images": [0, [[[[[[[0]]]]]]]]}), 400, "max_json_depth")  # hidden behind a number
    refused(client.post(INFER, json={"inputs": [{"parameters": deep}]}), 400, "max_json_depth")
    very_deep = b"[" * 100_000 + b"]" * 100_000  # past the parser's own recursion limit: refused before parsing
    refused(client.post(PREDICT, content=very_deep, headers={"Content-Type": "application/json"}), 413,
            "objects and arrays", "max_images_per_request")


def test_a_json_body_that_is_not_an_object(client: httpx.Client) -> None:
    refused(client.post(PREDICT, json=[BLANK]), 422, "JSON object")
    refused(client.post(INFER, json="x"), 400, "JSON object")


# ---- V1 arrays: shapes, types, ranges ------------------------------------------------------

@pytest.mark.parametrize(("image", "words"), [
    ([[0] * 28] * 27, ["image", "27 rows"]),
    ([[0] * 28] * 27 + [[0] * 27], ["image[27]", "27 values"]),
    ([["0"] * 28] * 28, ["image[0][0]", "str"]),
    ([[None] * 28] * 28, ["image[0][0]"]),
    ([[True] * 28] * 28, ["image[0][0]", "bool"]),
    ("abc", ["image", "28x28"]),
    ([[[0] * 28] * 28], ["image"]),
])
def test_wrong_shapes_and_types_name_the_field(client: httpx.Client, image: object, words: list[str]) -> None:
    refused(client.post(PREDICT, json={"image": image}), 422, *words)


@pytest.mark.parametrize(("value", "words"), [(256, ["0-255"]), (-1, ["0-255"]), (1.5, ["[0, 1]"]), (-0.1, ["[0, 1]"])])
def test_values_out_of_range(client: httpx.Client, value: float, words: list[str]) -> None:
    image = [[0] * 28 for _ in range(28)]
    image[3][4] = value
    refused(client.post(PREDICT, json={"image": image}), 422, "image", *words)
    refused(client.post(PREDICT, json={"images": [BLANK, image]}), 422, "images[1]", *words)


def test_unknown_and_conflicting_fields(client: httpx.Client) -> None:
    refused(client.post(PREDICT, json={"img": BLANK}), 422, "'img'")
    refused(client.post(PREDICT, json={"image": BLANK, "images": [BLANK]}), 422, "exactly one")
    refused(client.post(PREDICT, json={"images": []}), 422, "'images'", "non-empty")
    refused(client.post(f"/v1/models/{MODEL_NAME}/activations", json={"images": [BLANK]}), 422, "'images'")


# ---- images per request, encoded size, decoded pixels, multipart parts -------------------

def test_images_per_request(client: httpx.Client) -> None:
    assert client.post(PREDICT, json={"images": [BLANK] * MAX_IMAGES}).status_code == 200
    refused(client.post(PREDICT, json={"images": [BLANK] * (MAX_IMAGES + 1)}), 413, "max_images_per_request", str(MAX_IMAGES))
    blank_png = base64.b64encode(encode_png(np.zeros((28, 28), np.uint8))).decode()
    refused(client.post(PREDICT, json={"images_base64": [blank_png] * (MAX_IMAGES + 1)}), 413, "max_images_per_request")
    refused(client.post(PREDICT, files=[png_part()] * (MAX_IMAGES + 1)), 413, "max_images_per_request")
    batch = np.zeros((MAX_IMAGES + 1, 1, 28, 28), np.uint8)
    refused(client.post(INFER, json=v2_json(batch.ravel().tolist(), list(batch.shape))), 413, "max_images_per_request")


def test_encoded_image_size(client: httpx.Client) -> None:
    noise = np.random.default_rng(0).integers(0, 256, (200, 200), np.uint8)  # incompressible: ~40 KB of PNG per 200x200
    big_png = encode_png(np.tile(noise, (2, 1)))
    assert len(big_png) > MAX_ENCODED_BYTES
    refused(client.post(PREDICT, json={"image_base64": base64.b64encode(big_png).decode()}), 413, "max_encoded_image_bytes")
    refused(client.post(PREDICT, files=[png_part(data=big_png)]), 413, "max_encoded_image_bytes")


@pytest.mark.parametrize("side", [1_500, 20_000])
def test_decompression_bombs_are_refused_from_the_header(client: httpx.Client, side: int) -> None:
    """A 20000x20000 1-bit PNG is ~50 KB and would decode to 400 million pixels; 1500x1500 is
    under Pillow's own guard but over this server's max_image_pixels."""
    bomb = decompression_bomb(side, side)
    assert len(bomb) < MAX_ENCODED_BYTES
    started = time.monotonic()
    refused(client.post(PREDICT, files=[png_part(data=bomb)]), 413, "max_image_pixels")
    refused(client.post(PREDICT, json={"image_base64": base64.b64encode(bomb).decode()}), 413, "max_image_pixels")
    assert time.monotonic() - started < 5


def test_unreadable_image_files(client: httpx.Client) -> None:
    png = encode_png(np.full((28, 28), 255, np.uint8))
    refused(client.post(PREDICT, files=[png_part(data=png[: len(png) // 2])]), 422, "file[0]", "not a readable image")
    refused(client.post(PREDICT, files=[png_part(data=b"")]), 422, "file[0]", "empty")
    refused(client.post(PREDICT, json={"image_base64": "!!not base64!!"}), 422, "image_base64", "base64")
    refused(client.post(PREDICT, json={"image_base64": base64.b64encode(b"GIF89a....").decode()}), 422, "image_base64")


def test_multipart_part_count(client: httpx.Client) -> None:
    refused(client.post(PREDICT, files=[png_part()] * (MAX_PARTS + 1)), 413, "max_multipart_parts", str(MAX_PARTS))
    fields = [("note", (None, b"x")) for _ in range(MAX_PARTS + 1)]
    refused(client.post(PREDICT, files=fields + [png_part()]), 413, "max_multipart_parts")
    refused(client.post(PREDICT, files=[("other", ("a.png", b"x", "image/png"))]), 422, "'file'")
    refused(client.post(f"/v1/models/{MODEL_NAME}/activations", files=[png_part()] * 2), 422, "one image")


# ---- V2 tensors ----------------------------------------------------------------------------

def test_v2_shapes_and_datatypes(client: httpx.Client) -> None:
    zeros = [0] * 784
    assert client.post(INFER, json=v2_json(zeros, [1, 1, 28, 28])).status_code == 200
    refused(client.post(INFER, json=v2_json(zeros, [1, 28, 28])), 400, "shape")
    refused(client.post(INFER, json=v2_json(zeros, [1, 1, 28, 27])), 400, "shape")
    refused(client.post(INFER, json=v2_json(zeros[:-1], [1, 1, 28, 28])), 400, "783 values")
    refused(client.post(INFER, json=v2_json(zeros, [1, 1, 28, 28], "INT64")), 400, "datatype", "INT64")
    refused(client.post(INFER, json=v2_json(["a"] * 784, [1, 1, 28, 28], "FP32")), 400, "FP32")
    refused(client.post(INFER, json={"inputs": [{"name": "x", "datatype": "UINT8", "shape": [1, 1, 28, 28], "data": zeros}]}),
            400, "unknown input")
    refused(client.post(INFER, json={**v2_json(zeros, [1, 1, 28, 28]), "outputs": [{"name": "nope"}]}), 400, "unknown output")


def test_v2_ranges_and_non_finite_values(client: httpx.Client) -> None:
    refused(client.post(INFER, json=v2_json([300] + [0] * 783, [1, 1, 28, 28])), 400, "UINT8", "0-255")
    refused(client.post(INFER, json=v2_json([2.0] + [0.0] * 783, [1, 1, 28, 28], "FP32")), 400, "[0, 1]")
    refused(client.post(INFER, json=v2_json([None] * 784, [1, 1, 28, 28], "FP32")), 400, "finite")
    for bad in (np.nan, np.inf, -np.inf):
        batch = np.zeros((1, 1, 28, 28), "<f4")
        batch[0, 0, 5, 5] = bad
        content, headers = v2_binary(batch)
        refused(client.post(INFER, content=content, headers=headers), 400, "finite")


def test_v2_truncated_and_inconsistent_binary_tensors(client: httpx.Client) -> None:
    batch = np.random.default_rng(1).random((2, 1, 28, 28), dtype=np.float32)
    content, headers = v2_binary(batch)
    assert client.post(INFER, content=content, headers=headers).status_code == 200
    content, headers = v2_binary(batch, cut=7)
    refused(client.post(INFER, content=content, headers=headers), 400, "truncated")
    content, headers = v2_binary(batch)
    refused(client.post(INFER, content=content + b"\x00" * 4, headers=headers), 400, "beyond")
    refused(client.post(INFER, content=content, headers={**headers, "Inference-Header-Content-Length": str(len(content) + 1)}),
            400, "Inference-Header-Content-Length")
    refused(client.post(INFER, content=content, headers={**headers, "Inference-Header-Content-Length": "abc"}),
            400, "Inference-Header-Content-Length")
    refused(client.post(INFER, content=content, headers={"Content-Type": "application/octet-stream"}), 400, "not valid JSON")


# ---- headers, request ids, logs, CORS, admin ------------------------------------------------

def test_security_headers_on_the_page(client: httpx.Client) -> None:
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert page.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["referrer-policy"] == "no-referrer"
    api = client.get("/healthz")
    assert api.headers["x-content-type-options"] == "nosniff"


def test_request_id_is_echoed_generated_and_logged(limited: ServerProcess, client: httpx.Client) -> None:
    echoed = client.post(PREDICT, json={"image": BLANK}, headers={"X-Request-ID": "client-chosen.id_42"})
    assert echoed.headers["x-request-id"] == "client-chosen.id_42"
    generated = client.get("/healthz").headers["x-request-id"]
    assert len(generated) == 32 and int(generated, 16) >= 0
    for hostile in ("has space", "x" * 65, "new\\nline", "<script>"):
        replaced = client.get("/healthz", headers={"X-Request-ID": hostile}).headers["x-request-id"]
        assert replaced != hostile and len(replaced) == 32
    failed = client.post(PREDICT, json={"image": "x"}, headers={"X-Request-ID": "failed-request-7"})
    assert failed.status_code == 422 and failed.headers["x-request-id"] == "failed-request-7"
    logged = logged_requests(limited, {"client-chosen.id_42", "failed-request-7"})
    assert (logged["client-chosen.id_42"]["path"], logged["client-chosen.id_42"]["status"]) == (PREDICT, 200)
    assert logged["failed-request-7"]["status"] == 422


def logged_requests(server: ServerProcess, request_ids: set[str], timeout: float = 5.0) -> dict[str, dict]:
    """The access log's JSON entry for each request id, waiting for the log to be written."""
    deadline = time.monotonic() + timeout
    while True:
        entries = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
        found = {entry["request_id"]: entry for entry in entries
                 if entry.get("logger") == "mnist_serve.access" and entry.get("request_id") in request_ids}
        if set(found) == request_ids or time.monotonic() > deadline:
            assert set(found) == request_ids, f"not logged: {request_ids - set(found)}"
            return found
        time.sleep(0.05)


def test_errors_never_carry_stack_traces(client: httpx.Client) -> None:
    for response in (client.get("/nope"), client.post(PREDICT, content=b"{", headers={"Content-Type": "application/json"}),
                     client.get(f"/v1/models/{MODEL_NAME}/versions/0"), client.delete(PREDICT),
                     client.get(f"/v1/models/{MODEL_NAME}/layers/relu1/weights")):
        assert 400 <= response.status_code < 500
        refused(response, response.status_code)


def test_cors_is_off_by_default(client: httpx.Client) -> None:
    simple = client.get("/v1/models", headers={"Origin": ORIGIN})
    assert simple.status_code == 200 and "access-control-allow-origin" not in simple.headers
    preflight = client.options(PREDICT, headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in preflight.headers


def test_cors_allows_only_the_configured_origin(guarded: ServerProcess) -> None:
    with httpx.Client(base_url=guarded.url, timeout=15) as http:
        allowed = http.get("/v1/models", headers={"Origin": ORIGIN})
        assert allowed.headers["access-control-allow-origin"] == ORIGIN
        assert "X-Request-ID" in allowed.headers["access-control-expose-headers"]
        preflight = http.options(PREDICT, headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST",
                                                   "Access-Control-Request-Headers": "content-type"})
        assert preflight.status_code == 200 and preflight.headers["access-control-allow-origin"] == ORIGIN
        other = http.get("/v1/models", headers={"Origin": "http://evil.test"})
        assert "access-control-allow-origin" not in other.headers


def test_admin_routes_are_off_by_default(client: httpx.Client) -> None:
    for path in ("/v2/repository/index", f"/v2/repository/models/{MODEL_NAME}/load",
                 f"/v2/repository/models/{MODEL_NAME}/unload"):
        refused(client.post(path), 404, "disabled")
    assert "model_repository" not in client.get("/v2").json()["extensions"]
    assert client.post(PREDICT, json={"image": BLANK}).status_code == 200  # nothing was unloaded


def test_admin_routes_need_the_token(guarded: ServerProcess) -> None:
    with httpx.Client(base_url=guarded.url, timeout=30) as http:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": ADMIN_TOKEN},
                        {"Authorization": f"Basic {ADMIN_TOKEN}"}):
            response = http.post(f"/v2/repository/models/{MODEL_NAME}/unload", headers=headers)
            refused(response, 401, "token")
            assert response.headers["www-authenticate"] == "Bearer"
        assert http.post(PREDICT, json={"image": BLANK}).status_code == 200
        index = http.post("/v2/repository/index", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        assert index.status_code == 200
        assert index.json() == [{"name": MODEL_NAME, "version": "1", "state": "READY", "reason": ""}]
        assert "model_repository" in http.get("/v2").json()["extensions"]
