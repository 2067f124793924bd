"""The soak's requests (tests/soak.py): valid ones that the defaults admit, hostile ones that must
get a clean 4xx or be closed, and clients that disconnect while their request waits. Each action
returns what the client saw: the status, or how the connection ended. Together they stay within
the server's shared budgets (responses and bodies in progress, images queued), so that a 503
(load shedding) in the soak is a failure too."""

from __future__ import annotations

import base64
import gzip
import json
import random
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx
import numpy as np
import orjson

from tests.service.payloads import decompression_bomb, encode_png

Outcome = str  # "200", "413", ... or "closed", "reset", "timeout"
MODELS = ("cnn-pytorch", "cnn-tensorflow", "lenet-pytorch", "lenet-tensorflow")
DIGITS = np.random.default_rng(7).integers(0, 256, (256, 28, 28), dtype=np.uint8)
PNG_280 = encode_png(np.kron(DIGITS[0], np.ones((10, 10), np.uint8)))
PNG_4000 = encode_png(np.full((4000, 4000), 255, np.uint8))
BOMB = decompression_bomb(20_000, 20_000)
EMPTY_OBJECTS = b"[" + b"{}," * (2_700_000) + b"{}]"  # about 8 MB of `{}`
GZIP_BOMB = gzip.compress(b"{" + b" " * (64 * 1024 * 1024) + b"}")
JSON = {"Content-Type": "application/json"}
# Bodies encoded once: the load generator shares the machine's CPU with the server it measures.
ONE_DIGIT = [orjson.dumps({"image": digit.tolist()}) for digit in DIGITS[:16]]
SIXTY_FOUR = orjson.dumps({"images": DIGITS[:64].tolist()})
PNG_BASE64 = orjson.dumps({"image_base64": base64.b64encode(PNG_280).decode()})
V2_ONE_UINT8 = orjson.dumps({"inputs": [{"name": "image", "datatype": "UINT8", "shape": [1, 1, 28, 28],
                                         "data": DIGITS[0].ravel().tolist()}]})
V2_256_FP32 = orjson.dumps({"inputs": [{"name": "image", "datatype": "FP32", "shape": [256, 1, 28, 28],
                                        "data": (DIGITS[:, None].astype(np.float32) / 255).round(7).tolist()}],
                            "outputs": [{"name": "probabilities"}]})


@dataclass(frozen=True)
class Action:
    name: str
    run: Callable[[httpx.Client, str, random.Random], Outcome]
    weight: float = 1.0


def model(rng: random.Random) -> str:
    return rng.choice(MODELS)


def status(response: httpx.Response) -> Outcome:
    return str(response.status_code)


def v2_binary(batch: np.ndarray, outputs: list[str] | None, binary_out: bool = True) -> tuple[bytes, dict[str, str]]:
    header: dict = {"inputs": [{"name": "image", "datatype": "UINT8", "shape": list(batch.shape),
                                "parameters": {"binary_data_size": batch.nbytes}}],
                    "parameters": {"binary_data_output": binary_out}}
    if outputs is not None:
        header["outputs"] = [{"name": name} for name in outputs]
    head = orjson.dumps(header)
    return head + batch.tobytes(), {"Inference-Header-Content-Length": str(len(head)),
                                    "Content-Type": "application/octet-stream"}


# ---- raw connections ------------------------------------------------------------------------

def address(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").split(":")
    return host, int(port)


def read_status(sock: socket.socket, timeout: float) -> Outcome:
    """The status of the response on `sock`, reading until the server closes; how it ended otherwise."""
    sock.settimeout(timeout)
    data = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
            if len(data) > 1 << 20:
                break
    except socket.timeout:
        if not data:
            return "timeout"
    except (ConnectionResetError, BrokenPipeError):
        if not data:
            return "reset"
    return data.split(b" ", 2)[1].decode() if data.startswith(b"HTTP/1.1 ") else "closed"


def raw(url: str, head: bytes, body_parts: tuple[bytes, ...] = (), pause: float = 0.0,
        timeout: float = 120.0) -> Outcome:
    """Send `head`, then each of `body_parts` after `pause`; the answer (the server may answer and
    close before everything is sent)."""
    with socket.create_connection(address(url), timeout=10) as sock:
        try:
            sock.sendall(head)
            for part in body_parts:
                if pause:
                    time.sleep(pause)
                sock.sendall(part)
        except (ConnectionResetError, BrokenPipeError):
            pass
        return read_status(sock, timeout)


def request_head(method: str, path: str, headers: dict[str, str]) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: soak", *(f"{k}: {v}" for k, v in headers.items()), "", ""]
    return "\r\n".join(lines).encode("latin-1")


# ---- valid requests (the defaults admit each) -----------------------------------------------

def predict_one(client: httpx.Client, url: str, rng: random.Random) -> Outcome:
    return status(client.post(f"/v1/models/{model(rng)}/predict", content=rng.choice(ONE_DIGIT), headers=JSON))


def predict_batch(client: httpx.Client, url: str, rng: random.Random) -> Outcome:
    return status(client.post("/v1/predict", content=SIXTY_FOUR, headers=JSON))


def predict_files(client: httpx.Client, url: str, rng: random.Random) -> Outcome:
    files = [("file", ("d.png", PNG_280, "image/png"))] * 4
    return status(client.post(f"/v1/models/{model(rng)}/predict", files=files))


def activations(client: httpx.Client, url: str, rng: random.Random) -> Outcome:
    encoding = rng.choice(["json", "png", "base64"])
    return status(client.post(f"/v1/models/{model(rng)}/activations?encoding={encoding}",
                              content=PNG_BASE64, headers=JSON))


def explain_fine(client: httpx.Client, url: str, rng: random.Random) -> Outcome:
    return status(client.post(f"/v1/models/{model(rng)}/explain?patch=1&stride=1",
                              files={"file": ("d.png", PNG_280, "image/png")}))


def explain_default(client: httpx.Client, url: str, rng: random.Random) -> Outcome:
    return status(client.post(f"/v1/models/{model(rng)}/explain", content=ONE_DIGIT[1], headers=JSON))


def v2_batch(client: httpx.Client, url: str, rng: random.Random) -> Outcome:
    content, headers = v2_binary(DIGITS[:64, None], ["probabilities", "conv1"])
    return status(client.post(f"/v2/models/{model(rng)}/infer", content=content, headers=headers))


def v2_all_outputs_json(client: httpx.Client, url: str, rng: random.Random) -> Outcome:
    return status(client.post(f"/v2/models/{model(rng)}/infer", content=V2_ONE_UINT8, headers=JSON))


def v2_largest_json(client: httpx.Client, url: str, rng: random.Random) -> Outcome:
    """12 images, every output, as JSON: just under max_response_bytes (32 MiB) by the estimate."""
    content, headers = v2_binary(DIGITS[:12, None], None, binary_out=False)
    return status(client.post("/v2/models/cnn-pytorch/infer", content=content, headers=headers))


def v2_largest_binary(client: httpx.Client, url: str, rng: random.Random) -> Outcome:
    """48 images, every output, raw float32: about 31 MB."""
    content, headers = v2_binary(DIGITS[:48, None], None)
    return status(client.post("/v2/models/cnn-pytorch/infer", content=content, headers=headers))


def v2_json_body_256(client: httpx.Client, url: str, rng: random.Random) -> Outcome:
    """The largest V2 JSON request: 256 images of FP32 values, nested like the shape."""
    return status(client.post(f"/v2/models/{model(rng)}/infer", content=V2_256_FP32, headers=JSON))


def two_big_photos(client: httpx.Client, url: str, rng: random.Random) -> Outcome:
    """Two 16-megapixel files: all that max_request_pixels (32 million) admits."""
    return status(client.post("/v1/predict", files=[("file", ("big.png", PNG_4000, "image/png"))] * 2))


VALID = [Action("predict_one", predict_one, 6), Action("predict_64", predict_batch, 2),
         Action("predict_4_files", predict_files, 2), Action("activations", activations, 2),
         Action("explain_stride_1", explain_fine, 1), Action("explain_default", explain_default, 2),
         Action("v2_binary_64", v2_batch, 2), Action("v2_json_all_outputs", v2_all_outputs_json, 1)]

WORST = [Action("explain_stride_1", explain_fine), Action("v2_json_12_all_outputs", v2_largest_json),
         Action("v2_binary_48_all_outputs", v2_largest_binary), Action("v2_json_request_256_fp32", v2_json_body_256),
         Action("predict_2_files_16_megapixels", two_big_photos), Action("predict_64_json", predict_batch),
         Action("activations", activations)]


# ---- hostile requests -------------------------------------------------------------------------

def slow_headers(client: httpx.Client, url: str, rng: random.Random) -> Outcome:
    parts = tuple(f"X-Slow-{index}: {index}\r\n".encode() for index in range(100))
    return raw(url, b"GET /healthz HTTP/1.1\r\nHost: soak\r\n", parts, pause=0.5)


def idle_connection(client: httpx.Client, url: str, rng: random.Random) -> Outcome:
    return raw(url, b"")


def huge_header(client: httpx.Client, url: str, rng: random.Random) -> Outcome:
    return raw(url, b"GET /healthz HTTP/1.1\r\nHost: soak\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n")


def slow_body(client: httpx.Client, url: str, rng: random.Random) -> Outcome:
    head = request_head("POST", "/v1/predict", {"Content-Type": "application/json", "Content-Length": "4000"})
    return raw(url, head, (b" " * 10,) * 400, pause=0.5)


def declared_too_large(client: httpx.Client, url: str, rng: random.Random) -> Outcome:
    return raw(url, request_head("POST", "/v1/predict", {"Content-Type": "application/json",
                                                         "Content-Length": str(9 * 1024 * 1024)}))


def empty_objects(client: httpx.Client, url: str, rng: random.Random) -> Outcome:
    return status(client.post("/v1/predict", content=EMPTY_OBJECTS, headers={"Content-Type": "application/json"}))


def every_output_of_256(client: httpx.Client, url: str, rng: random.Random) -> Outcome:
    content, headers = v2_binary(DIGITS[:, None], None, binary_out=False)
    return status(client.post(f"/v2/models/{model(rng)}/infer", content=content, headers=headers))


def repeated_outputs(client: httpx.Client, url: str, rng: random.Random) -> Outcome:
    content, headers = v2_binary(DIGITS[:, None], ["conv1"] * 20)
    return status(client.post(f"/v2/models/{model(rng)}/infer", content=content, headers=headers))


def repeated_layers(client: httpx.Client, url: str, rng: random.Random) -> Outcome:
    layers = ",".join(["conv1"] * 1000)
    return status(client.post(f"/v1/activations?layers={layers}", content=ONE_DIGIT[2], headers=JSON))


def bomb(client: httpx.Client, url: str, rng: random.Random) -> Outcome:
    return status(client.post("/v1/predict", files={"file": ("bomb.png", BOMB, "image/png")}))


def too_many_pixels(client: httpx.Client, url: str, rng: random.Random) -> Outcome:
    return status(client.post("/v1/predict", files=[("file", ("big.png", PNG_4000, "image/png"))] * 3))


def datatype_as_list(client: httpx.Client, url: str, rng: random.Random) -> Outcome:
    body = {"inputs": [{"name": "image", "datatype": ["FP32"], "shape": [1, 1, 28, 28], "data": [0] * 784}]}
    return status(client.post(f"/v2/models/{model(rng)}/infer", json=body))


def gzip_bomb(client: httpx.Client, url: str, rng: random.Random) -> Outcome:
    return status(client.post("/v1/predict", content=GZIP_BOMB,
                              headers={"Content-Type": "application/json", "Content-Encoding": "gzip"}))


def admin_form(client: httpx.Client, url: str, rng: random.Random) -> Outcome:
    return status(client.post("/v2/repository/models/cnn-pytorch/unload", data={"x": "1"}))


def forged_log_line(client: httpx.Client, url: str, rng: random.Random) -> Outcome:
    forged = json.dumps({"level": "error", "message": "forged"}).replace(" ", "")
    return raw(url, f"GET /nope%0A{forged} HTTP/1.1\r\nHost: soak\r\n\r\n".encode())


def unread_response(client: httpx.Client, url: str, rng: random.Random) -> Outcome:
    """Asks for a 10 MB response and reads none of it: disconnected after send_timeout_s."""
    content, headers = v2_binary(DIGITS[:16, None], None)
    head = request_head("POST", "/v2/models/cnn-pytorch/infer", {**headers, "Content-Length": str(len(content))})
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(address(url))
        sock.sendall(head + content)
        time.sleep(40)
        return read_status(sock, 10)


HOSTILE = [Action("slow_headers", slow_headers), Action("idle_connection", idle_connection),
           Action("huge_header", huge_header, 2), Action("slow_body", slow_body, 0.5),
           Action("declared_9MB", declared_too_large, 2), Action("8MB_of_empty_objects", empty_objects),
           Action("v2_every_output_of_256_json", every_output_of_256, 2), Action("v2_20x_conv1", repeated_outputs, 2),
           Action("1000x_conv1_layers", repeated_layers, 2), Action("png_bomb", bomb, 2),
           Action("3_files_of_16_megapixels", too_many_pixels, 0.5), Action("datatype_as_list", datatype_as_list, 2),
           Action("gzip_bomb", gzip_bomb), Action("admin_form_post", admin_form, 2),
           Action("forged_log_line", forged_log_line, 2), Action("unread_10MB_response", unread_response, 0.3)]


# ---- clients that leave ---------------------------------------------------------------------

def leave_after(url: str, head: bytes, rng: random.Random) -> Outcome:
    with socket.create_connection(address(url), timeout=10) as sock:
        sock.sendall(head)
        time.sleep(rng.uniform(0.0, 0.3))
    return "left"


def leave_explain(client: httpx.Client, url: str, rng: random.Random) -> Outcome:
    body = orjson.dumps({"image": DIGITS[3].tolist()})
    head = request_head("POST", f"/v1/models/{model(rng)}/explain?patch=1&stride=1",
                        {"Content-Type": "application/json", "Content-Length": str(len(body))})
    return leave_after(url, head + body, rng)


def leave_v2(client: httpx.Client, url: str, rng: random.Random) -> Outcome:
    content, headers = v2_binary(DIGITS[:64, None], ["probabilities", "conv1"])
    head = request_head("POST", f"/v2/models/{model(rng)}/infer", {**headers, "Content-Length": str(len(content))})
    return leave_after(url, head + content, rng)


DISCONNECTING = [Action("leave_explain_stride_1", leave_explain), Action("leave_v2_64", leave_v2)]
