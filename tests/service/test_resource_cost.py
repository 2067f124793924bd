"""The cost model: every request priced before any work, in images of compute and bytes of
response. The estimates are checked against real responses (real models through ONNX Runtime,
the real renderers and encoders); the limits and the queue's admission by cost through a real
server with small limits."""

from __future__ import annotations

import base64
import re
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import onnx
import orjson
import pytest

from contract.validation import validate_model
from service import admission, occlusion, offload
from service.jsonio import dumps
from service.protocol.v1 import render
from service.protocol.v1.options import ActivationsOptions
from service.protocol.v2 import model_io
from service.protocol.v2.rest import encode_response
from service.protocol.v2.types import InferInput, InferRequest, RequestedOutput
from service.runtime import ModelRuntime
from tests.conftest import MODELS_DIR, ServerProcess
from tests.service.payloads import encode_png
from tests.service.servers import MODEL_NAME, start_private_server
from tests.service.soak_requests import v2_binary
from tests.service.test_limits import read_response, refused

MAX_COMPUTE_IMAGES = 700
MAX_RESPONSE_BYTES = 4 * 1024 * 1024
MAX_REQUEST_PIXELS = 1_500_000
MAX_QUEUE_IMAGES = 200
MAX_PENDING_RESPONSE_BYTES = 3 * 1024 * 1024
MAX_PENDING_BODY_BYTES = 1024 * 1024
PRICED = {
    "MNIST_SERVE_MAX_COMPUTE_IMAGES": str(MAX_COMPUTE_IMAGES),
    "MNIST_SERVE_MAX_RESPONSE_BYTES": str(MAX_RESPONSE_BYTES),
    "MNIST_SERVE_MAX_REQUEST_PIXELS": str(MAX_REQUEST_PIXELS),
    "MNIST_SERVE_MAX_QUEUE_IMAGES": str(MAX_QUEUE_IMAGES),
    "MNIST_SERVE_MAX_PENDING_RESPONSE_BYTES": str(MAX_PENDING_RESPONSE_BYTES),
    "MNIST_SERVE_MAX_PENDING_BODY_BYTES": str(MAX_PENDING_BODY_BYTES),
}
BLANK = [[0] * 28 for _ in range(28)]
RNG = np.random.default_rng(11)


# ---- the estimates against real responses ---------------------------------------------------

@pytest.fixture(scope="module", params=["cnn-pytorch", "lenet-tensorflow"])
def model(request: pytest.FixtureRequest) -> tuple[ModelRuntime, tuple]:
    path = MODELS_DIR / request.param / "1" / "model.onnx"
    validated = validate_model(onnx.load(path))
    return ModelRuntime(path.read_bytes(), "cpu", 1), validated


def inputs(count: int) -> np.ndarray:
    """Noise and strokes: activations of every sign and magnitude, the longest JSON numbers."""
    noise = RNG.random((count, 1, 28, 28), dtype=np.float32)
    noise[::2] = (noise[::2] > 0.8).astype(np.float32)
    return noise


def within(actual: int, estimate: int) -> None:
    assert actual <= estimate, f"the estimate {estimate} is below the real size {actual}"
    assert estimate <= 4 * actual + 4096, f"the estimate {estimate} is far above the real size {actual}"


@pytest.mark.parametrize("binary", [False, True])
def test_v2_responses_never_exceed_their_price(model: tuple, binary: bool) -> None:
    runtime, validated = model
    batch = inputs(4)
    outputs = [RequestedOutput(name, binary) for name in validated.outputs]
    results = runtime.run(batch, validated.outputs)
    request = InferRequest([InferInput("image", "FP32", list(batch.shape), batch)], outputs, id="x" * 64)
    body, _ = encode_response(model_io.response("cnn-pytorch", 1, request, outputs, results))
    priced = admission.v2(validated.layers, len(batch), [(name, binary) for name in validated.outputs], "x" * 64)
    within(len(body), priced.response_bytes)


@pytest.mark.parametrize(("encoding", "dtype"), [("json", "float32"), ("base64", "float32"), ("base64", "float16"),
                                                 ("png", "float32")])
def test_activations_never_exceed_their_price(model: tuple, encoding: str, dtype: str) -> None:
    runtime, validated = model
    batch = inputs(1)
    options = ActivationsOptions(encoding=encoding, dtype=dtype, bins=256)
    results = runtime.run(batch, validated.outputs)
    body = {"model": "m" * 64, "version": 1, "prediction": render.predictions(results["probabilities"], 10)[0],
            "layers": render.layers(validated.layers, results, options), "input": render.input_rows(batch[0, 0])}
    within(len(dumps(body)), admission.activations(validated.layers, encoding, dtype, 256, True).response_bytes)


@pytest.mark.parametrize(("patch", "stride"), [(1, 1), (5, 2), (28, 28)])
def test_explain_and_predict_never_exceed_their_price(model: tuple, patch: int, stride: int) -> None:
    runtime, _ = model
    image = inputs(1)[0, 0]
    plan = occlusion.make_plan(patch, stride, 0.0)
    probabilities = runtime.run(occlusion.occluded_batch(image, plan)[:, None], ["probabilities"])["probabilities"]
    drops, heatmap = occlusion.sensitivity(probabilities, 3, plan)
    body = {"model": "m" * 64, "version": 1, "target": 3, "predicted": 3, "probability": float(probabilities[0, 3]),
            "patch": patch, "stride": stride, "fill": 0.0, "shape": list(drops.shape), "map": np.round(drops, 5),
            "heatmap": np.round(heatmap, 5), "input": render.input_rows(image)}
    cost = admission.explain(len(plan.positions))
    within(len(dumps(body)), cost.response_bytes)
    assert cost.images == len(probabilities)
    predictions = {"model": "m" * 64, "version": 1, "predictions": render.predictions(probabilities, 10),
                   "inputs": render.input_rows(occlusion.occluded_batch(image, plan))}
    within(len(dumps(predictions)), admission.predict(len(probabilities), True).response_bytes)


def test_large_responses_are_encoded_in_pieces_to_the_same_bytes() -> None:
    big = RNG.standard_normal(100_000).astype(np.float32) * 1e-3
    nested = RNG.random((3, 70_000), dtype=np.float32)
    content = {"id": 'quote " and marker-like "abc0"', "outputs": [
        {"name": "a", "data": big}, {"name": "b", "data": nested},
        {"name": "c", "data": np.arange(5, dtype=np.float32)},
        {"name": "d", "data": np.round(RNG.random((32, 28, 28), dtype=np.float32), 5)}],
        "tuple": (1, 2.5, None, True), "ints": np.arange(offload.PIECE_VALUES * 2 + 3, dtype=np.int64)}
    assert offload.dumps_in_pieces(content) == orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)
    assert offload.dumps_in_pieces({"small": [1, 2]}) == dumps({"small": [1, 2]})


# ---- the limits through a real server ---------------------------------------------------------

@pytest.fixture(scope="module")
def priced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = start_private_server(tmp_path_factory.mktemp("priced"), PRICED)
    yield server
    assert "Traceback" not in server.log()
    assert server.stop() == 0


@pytest.fixture
def client(priced: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=priced.url, timeout=60) as http:
        yield http


def metric(client: httpx.Client, name: str) -> float:
    found = re.search(rf'^{re.escape(name)} ([0-9.e+]+)$', client.get("/metrics").text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def test_explain_is_priced_from_its_query_before_the_body_is_read(client: httpx.Client) -> None:
    # 1 + 28 x 28 positions: refused even though the body is not an image at all
    refused(client.post("/v1/explain?patch=1&stride=1", content=b"not read", headers={"Content-Type": "text/plain"}),
            413, "max_compute_images", str(MAX_COMPUTE_IMAGES), "785")
    refused(client.post("/v1/explain?patch=1&stride=1", json={"image": BLANK}), 413, "max_compute_images")


def test_explain_runs_through_the_batcher_in_max_batch_size_chunks(client: httpx.Client) -> None:
    label = f'model="{MODEL_NAME}:1"'
    before = metric(client, f"mnist_serve_batch_size_count{{{label}}}")
    response = client.post("/v1/explain?patch=5&stride=2", json={"image": BLANK})  # 1 + 12 x 12 = 145 images
    assert response.status_code == 200, response.text
    assert response.json()["shape"] == [12, 12]
    batches = metric(client, f"mnist_serve_batch_size_count{{{label}}}") - before
    assert batches >= 10, f"145 images in {batches} runs: not in chunks of max_batch_size (16)"
    text = client.get("/metrics").text
    assert metric(client, f'mnist_serve_batch_size_bucket{{le="16.0",{label}}}') == \
        metric(client, f"mnist_serve_batch_size_count{{{label}}}"), text


def test_responses_over_max_response_bytes_are_refused_before_compute(client: httpx.Client) -> None:
    digits = RNG.integers(0, 256, (8, 1, 28, 28), dtype=np.uint8)
    inferences = metric(client, f'mnist_serve_inferences_total{{model="{MODEL_NAME}:1"}}')
    content, headers = v2_binary(digits, None, binary_out=False)  # every output, as JSON: about 21 MB
    message = refused(client.post(f"/v2/models/{MODEL_NAME}/infer", content=content, headers=headers), 413,
                      "max_response_bytes", str(MAX_RESPONSE_BYTES))
    assert "binary" in message
    assert metric(client, f'mnist_serve_inferences_total{{model="{MODEL_NAME}:1"}}') == inferences
    content, headers = v2_binary(digits[:4], None, binary_out=True)  # the same outputs, raw: 2.6 MB
    assert client.post(f"/v2/models/{MODEL_NAME}/infer", content=content, headers=headers).status_code == 200
    assert client.post("/v1/activations", json={"image": BLANK}).status_code == 200  # every layer as JSON: 2 MB


def test_repeated_output_and_layer_names_are_refused(client: httpx.Client) -> None:
    refused(client.post("/v1/activations?layers=conv1,fc1,conv1", json={"image": BLANK}), 400, "conv1",
            "more than once")
    refused(client.post("/v1/activations?layers=" + ",".join(["conv1"] * 1000), json={"image": BLANK}), 400, "conv1")
    content, headers = v2_binary(np.zeros((1, 1, 28, 28), np.uint8), ["conv1", "conv1"])
    refused(client.post(f"/v2/models/{MODEL_NAME}/infer", content=content, headers=headers), 400, "conv1")


def test_json_bodies_are_priced_before_they_are_parsed(client: httpx.Client) -> None:
    started = time.monotonic()
    refused(client.post("/v1/predict", content=b"[" + b"{}," * 2_000_000 + b"{}]",
                        headers={"Content-Type": "application/json"}), 413, "objects and arrays",
            "max_images_per_request")
    refused(client.post(f"/v2/models/{MODEL_NAME}/infer", content=b'{"inputs": [' + b"0," * 1_000_000 + b"0]}",
                        headers={"Content-Type": "application/json"}), 413, "values", "max_images_per_request")
    assert time.monotonic() - started < 5


def test_the_pixels_of_all_the_files_of_a_request_are_priced_together(client: httpx.Client) -> None:
    photo = encode_png(np.full((1000, 1000), 255, np.uint8))
    assert client.post("/v1/predict", files=[("file", ("a.png", photo, "image/png"))]).status_code == 200
    refused(client.post("/v1/predict", files=[("file", ("a.png", photo, "image/png"))] * 2), 413, "file[1]",
            "max_request_pixels", str(MAX_REQUEST_PIXELS))
    encoded = base64.b64encode(photo).decode()
    refused(client.post("/v1/predict", json={"images_base64": [encoded, encoded]}), 413, "max_request_pixels")


def concurrently(count: int, send) -> list[httpx.Response]:  # noqa: ANN001
    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(lambda _: send(), range(count)))


def test_the_queue_admits_by_images_of_compute(priced: ServerProcess) -> None:
    """145 images each, against 200 admitted per model: while one runs, the next is refused."""
    with httpx.Client(base_url=priced.url, timeout=60) as http:
        responses = concurrently(6, lambda: http.post("/v1/explain?patch=5&stride=2", json={"image": BLANK}))
    statuses = sorted(response.status_code for response in responses)
    assert set(statuses) == {200, 503} and statuses.count(200) >= 1, statuses
    overloaded = next(response for response in responses if response.status_code == 503)
    refused(overloaded, 503, "max_queue_images", str(MAX_QUEUE_IMAGES))
    assert overloaded.headers["retry-after"] == "1"


def test_responses_in_progress_share_one_budget(priced: ServerProcess) -> None:
    """Every layer as JSON is priced at about 2.2 MB; two at once pass the 3 MB budget."""
    with httpx.Client(base_url=priced.url, timeout=60) as http:
        responses = concurrently(6, lambda: http.post("/v1/activations?bins=256", json={"image": BLANK}))
    statuses = sorted(response.status_code for response in responses)
    assert set(statuses) <= {200, 503} and 200 in statuses, statuses
    if 503 in statuses:  # on a fast machine they may not overlap
        refused(next(r for r in responses if r.status_code == 503), 503, "max_pending_response_bytes")


def test_request_bodies_in_progress_share_one_budget(priced: ServerProcess) -> None:
    host, port = priced.url.removeprefix("http://").split(":")
    declared = 700 * 1024
    head = (f"POST /v1/predict HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            f"Content-Length: {declared}\r\n\r\n").encode()
    with socket.create_connection((host, int(port))) as holder:
        holder.sendall(head + b'{"image": ')  # holds its declared 700 KB while it uploads
        time.sleep(0.3)
        with socket.create_connection((host, int(port))) as second:
            second.sendall(head)
            status, headers, body = read_response(second, timeout=10)
        assert status == 503 and "max_pending_body_bytes" in orjson.loads(body)["error"], body
        assert headers["retry-after"] == "1"
    with httpx.Client(base_url=priced.url, timeout=30) as http:
        assert http.post("/v1/predict", json={"image": BLANK}).status_code == 200  # the budget came back
