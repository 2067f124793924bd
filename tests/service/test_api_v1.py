"""The V1 API through a real uvicorn server on the committed models."""

from __future__ import annotations

import base64
import io
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from PIL import Image

from tests.conftest import latest_version, model_file, served_models
from tests.service.conftest import ort_session

CNN_MODELS = ["cnn-pytorch", "cnn-tensorflow"]
ALL_MODELS = served_models()


@pytest.fixture(scope="module")
def client(http: httpx.Client) -> httpx.Client:
    return http


def as_user_drawing(image: np.ndarray, rng: np.random.Generator) -> bytes:
    """What a user's upload looks like: dark ink on light paper, a few hundred pixels, off centre."""
    scale = int(rng.integers(8, 14))
    big = Image.fromarray(255 - image).resize((28 * scale, 28 * scale), Image.Resampling.BILINEAR)
    canvas = Image.new("L", (28 * scale + 120, 28 * scale + 90), 255)
    canvas.paste(big, (int(rng.integers(0, 120)), int(rng.integers(0, 90))))
    buffer = io.BytesIO()
    canvas.convert("RGB").save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("model", CNN_MODELS)
def test_first_thousand_test_images_as_json_arrays(client: httpx.Client, mnist_test_set, model: str) -> None:
    images, labels = mnist_test_set
    chunks = [(start, images[start : start + 50].tolist()) for start in range(0, 1000, 50)]

    def classify(chunk: tuple[int, list]) -> list[int]:
        response = client.post(f"/v1/models/{model}/predict", json={"images": chunk[1]})
        assert response.status_code == 200, response.text
        return [p["label"] for p in response.json()["predictions"]]

    with ThreadPoolExecutor(4) as pool:
        predicted = [label for chunk in pool.map(classify, chunks) for label in chunk]
    accuracy = float(np.mean(np.array(predicted) == labels[:1000]))
    assert accuracy >= 0.99, accuracy


@pytest.mark.parametrize("model", CNN_MODELS)
def test_first_thousand_as_user_style_png_uploads(client: httpx.Client, mnist_test_set, model: str) -> None:
    images, labels = mnist_test_set
    rng = np.random.default_rng(7)
    uploads = [as_user_drawing(image, rng) for image in images[:1000]]

    def classify(start: int) -> list[int]:
        files = [("file", (f"digit{start + i}.png", data, "image/png")) for i, data in enumerate(uploads[start : start + 10])]
        response = client.post(f"/v1/models/{model}/predict", files=files)
        assert response.status_code == 200, response.text
        return [p["label"] for p in response.json()["predictions"]]

    with ThreadPoolExecutor(4) as pool:
        predicted = [label for chunk in pool.map(classify, range(0, 1000, 10)) for label in chunk]
    accuracy = float(np.mean(np.array(predicted) == labels[:1000]))
    assert accuracy >= 0.98, accuracy


def test_prediction_shape_and_top_k(client: httpx.Client, mnist_test_set) -> None:
    images, labels = mnist_test_set
    response = client.post("/v1/predict?top_k=5&include_input=true", json={"image": (images[0] / 255.0).tolist()})
    assert response.status_code == 200
    body = response.json()
    assert body["model"] == "cnn-pytorch" and body["version"] == latest_version("cnn-pytorch")
    (prediction,) = body["predictions"]
    assert prediction["label"] == labels[0]
    assert len(prediction["probabilities"]) == 10 and sum(prediction["probabilities"]) == pytest.approx(1, abs=1e-4)
    assert [entry["label"] for entry in prediction["top_k"]][0] == prediction["label"]
    assert len(prediction["top_k"]) == 5
    assert np.allclose(np.array(body["inputs"][0]), images[0] / 255.0, atol=1e-4)


def test_integer_and_float_arrays_mean_the_same_image(client: httpx.Client, mnist_test_set) -> None:
    image = mnist_test_set[0][3]
    as_ints = client.post("/v1/predict", json={"image": image.tolist()}).json()
    as_floats = client.post("/v1/predict", json={"image": (image / 255.0).tolist()}).json()
    assert as_ints["predictions"][0]["probabilities"] == pytest.approx(as_floats["predictions"][0]["probabilities"], abs=1e-5)


def test_base64_image_and_data_url(client: httpx.Client, mnist_test_set) -> None:
    images, labels = mnist_test_set
    buffer = io.BytesIO()
    Image.fromarray(images[5]).save(buffer, format="PNG")
    encoded = base64.b64encode(buffer.getvalue()).decode()
    for value in (encoded, "data:image/png;base64," + encoded):
        response = client.post("/v1/models/cnn-tensorflow/predict", json={"image_base64": value})
        assert response.status_code == 200, response.text
        assert response.json()["predictions"][0]["label"] == labels[5]


def test_model_listing_and_versions(client: httpx.Client) -> None:
    listing = client.get("/v1/models").json()
    names = [model["name"] for model in listing["models"]]
    assert names == ALL_MODELS
    for model in listing["models"]:
        assert model["provider"] == "CPUExecutionProvider"
        assert model["input"] == {"name": "image", "datatype": "FP32", "shape": [-1, 1, 28, 28]}
        assert model["layers"][0]["name"] == "conv1" and model["test_accuracy"] >= 0.99
    one = client.get("/v1/models/cnn-pytorch/versions/1").json()
    assert one["framework"] == "pytorch" and one["architecture"] == "cnn" and one["version"] == 1
    assert one["versions"] == list(range(1, latest_version("cnn-pytorch") + 1))


@pytest.mark.parametrize("model", ALL_MODELS)
def test_activations_match_metadata_and_onnx_runtime(client: httpx.Client, mnist_test_set, model: str) -> None:
    image = mnist_test_set[0][11]
    response = client.post(f"/v1/models/{model}/activations?encoding=base64", json={"image": image.tolist()})
    assert response.status_code == 200, response.text
    body = response.json()
    declared = client.get(f"/v1/models/{model}").json()["layers"]
    assert [(layer["name"], layer["kind"], layer["shape"]) for layer in body["layers"]] == [
        (layer["name"], layer["kind"], layer["shape"]) for layer in declared]
    session = ort_session(model)
    names = [layer["name"] for layer in declared]
    expected = dict(zip(names, session.run(names, {"image": (image / np.float32(255))[None, None].astype(np.float32)})))
    for layer in body["layers"]:
        data = layer["data"]
        values = np.frombuffer(base64.b64decode(data["data"]), dtype="<f4").reshape(data["shape"])
        assert list(values.shape) == layer["shape"]
        np.testing.assert_allclose(values, expected[layer["name"]][0], rtol=1e-4, atol=1e-5)
        assert layer["stats"]["max"] == pytest.approx(float(values.max()), rel=1e-5, abs=1e-6)
        assert sum(layer["stats"]["histogram"]["counts"]) == values.size


def test_activations_png_and_json_encodings(client: httpx.Client, mnist_test_set) -> None:
    image = mnist_test_set[0][0].tolist()
    png = client.post("/v1/activations?encoding=png&layers=conv1,fc1", json={"image": image}).json()
    conv1, fc1 = png["layers"]
    assert len(conv1["data"]["channels"]) == 32
    first = Image.open(io.BytesIO(base64.b64decode(conv1["data"]["channels"][0])))
    assert first.size == (28, 28) and first.mode == "L"
    assert Image.open(io.BytesIO(base64.b64decode(fc1["data"]["channels"][0]))).size == (512, 1)
    as_json = client.post("/v1/activations?layers=pool2", json={"image": image}).json()
    assert np.array(as_json["layers"][0]["data"]).shape == (64, 7, 7)
    assert len(as_json["input"]) == 28


@pytest.mark.parametrize("model", ["cnn-pytorch", "lenet-tensorflow"])
def test_weights_equal_the_onnx_initializers(client: httpx.Client, model: str) -> None:
    proto = onnx.load(str(model_file(model)))
    initializers = {init.name: numpy_helper.to_array(init) for init in proto.graph.initializer}
    layouts = {p.key: p.value for p in proto.metadata_props}
    for layer in ("conv1", "fc1"):
        body = client.get(f"/v1/models/{model}/layers/{layer}/weights?encoding=base64").json()
        weight = np.frombuffer(base64.b64decode(body["weight"]["data"]["data"]), "<f4").reshape(body["weight"]["shape"])
        stored = initializers[f"{layer}.weight"]
        if '"in_out"' in layouts["weights"] and layer == "fc1":
            stored = stored.T
        if '"HWIO"' in layouts["weights"] and layer == "conv1":
            stored = stored.transpose(3, 2, 0, 1)
        np.testing.assert_array_equal(weight, stored)
        bias = np.frombuffer(base64.b64decode(body["bias"]["data"]["data"]), "<f4")
        np.testing.assert_array_equal(bias, initializers[f"{layer}.bias"])
    kernels = client.get(f"/v1/models/{model}/layers/conv1/weights?encoding=png").json()
    assert len(kernels["weight"]["data"]["channels"]) == kernels["weight"]["shape"][0]


def test_explain_map_shape_is_finite_and_looks_at_the_ink(client: httpx.Client, mnist_test_set) -> None:
    images, labels = mnist_test_set
    image = images[0]
    body = client.post("/v1/models/cnn-pytorch/explain?patch=4&stride=2", json={"image": image.tolist()}).json()
    positions = (28 - 4) // 2 + 1
    assert body["shape"] == [positions, positions] and body["target"] == labels[0]
    drops = np.array(body["map"])
    heatmap = np.array(body["heatmap"])
    assert drops.shape == (positions, positions) and heatmap.shape == (28, 28)
    assert np.isfinite(drops).all() and np.isfinite(heatmap).all()
    top = np.argsort(heatmap.ravel())[-10:]
    ink = image > 64
    dilated = ink.copy()  # the strokes and the two pixels around them
    for dy in (-2, -1, 0, 1, 2):
        for dx in (-2, -1, 0, 1, 2):
            dilated |= np.roll(ink, (dy, dx), axis=(0, 1))
    assert dilated.ravel()[top].mean() >= 0.9
    explicit = client.post("/v1/models/cnn-pytorch/explain?target=3", json={"image": image.tolist()}).json()
    assert explicit["target"] == 3


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "fragment"),
    [
        ("get", "/v1/models/nope", {}, 404, "not served"),
        ("get", "/v1/models/cnn-pytorch/versions/9", {}, 404, "no version 9"),
        ("post", "/v1/models/nope/predict", {"json": {"image": [[0] * 28] * 28}}, 404, "not served"),
        ("post", "/v1/models/cnn-pytorch/versions/7/predict", {"json": {"image": [[0] * 28] * 28}}, 404, "version 7"),
        ("get", "/v1/models/cnn-pytorch/layers/conv9/weights", {}, 404, "no layer 'conv9'"),
        ("get", "/v1/models/cnn-pytorch/layers/relu1/weights", {}, 404, "no weights"),
        ("post", "/v1/activations?layers=conv1,nope", {"json": {"image": [[0] * 28] * 28}}, 404, "no layer 'nope'"),
        ("post", "/v1/predict", {"json": {"image": [[0] * 28] * 27}}, 422, "27 rows"),
        ("post", "/v1/predict", {"json": {"images": [[[0] * 28] * 28, [[0] * 28] * 5 + [[0] * 3] + [[0] * 28] * 22]}},
         422, "images[1][5] has 3 values"),
        ("post", "/v1/predict", {"json": {"image": [[300] * 28] * 28}}, 422, "0-255"),
        ("post", "/v1/predict", {"json": {"image": [[1.5] * 28] * 28}}, 422, "[0, 1]"),
        ("post", "/v1/predict", {"json": {"image": [["a"] * 28] * 28}}, 422, "image[0][0] is str"),
        ("post", "/v1/predict", {"json": {"picture": 1}}, 422, "unknown field 'picture'"),
        ("post", "/v1/predict", {"json": {}}, 422, "exactly one of"),
        ("post", "/v1/predict", {"json": {"image_base64": "not base64!"}}, 422, "base64"),
        ("post", "/v1/predict", {"json": {"image_base64": base64.b64encode(b"plain text").decode()}}, 422, "not a readable image"),
        ("post", "/v1/predict", {"content": b"{not json", "headers": {"content-type": "application/json"}}, 400, "not valid JSON"),
        ("post", "/v1/predict", {"content": b"hello", "headers": {"content-type": "text/plain"}}, 415, "text/plain"),
        ("post", "/v1/activations", {"json": {"images": [[[0] * 28] * 28]}}, 422, "one image"),
        ("post", "/v1/predict?top_k=11", {"json": {"image": [[0] * 28] * 28}}, 422, "top_k"),
        ("post", "/v1/models/cnn-pytorch/predict?top_k=two", {"json": {"image": [[0] * 28] * 28}}, 422, "top_k"),
        ("post", "/v1/predict?preprocess=maybe", {"json": {"image": [[0] * 28] * 28}}, 422, "preprocess"),
        ("post", "/v1/models/cnn-pytorch/explain?patch=0", {"json": {"image": [[0] * 28] * 28}}, 422, "patch"),
        ("post", "/v1/predict", {"files": [("other", ("a.png", b"x", "image/png"))]}, 422, "no 'file' part"),
    ],
)
def test_errors_say_what_was_wrong(client: httpx.Client, method: str, path: str, kwargs: dict, status: int, fragment: str) -> None:
    response = getattr(client, method)(path, **kwargs)
    assert response.status_code == status, response.text
    assert fragment in response.json()["error"]


def test_health_and_readiness_show_the_provider(client: httpx.Client) -> None:
    assert client.get("/healthz").json() == {"status": "live"}
    ready = client.get("/readyz").json()
    assert ready["status"] == "ready" and ready["providers"] == ["CPUExecutionProvider"]


def test_metrics_count_requests_and_batches(client: httpx.Client) -> None:
    client.post("/v1/models/lenet-pytorch/predict", json={"image": [[0] * 28] * 28})
    client.post("/v2/models/lenet-pytorch/infer", json={"inputs": [
        {"name": "image", "datatype": "UINT8", "shape": [1, 1, 28, 28], "data": [0] * 784}]})
    text = client.get("/metrics").text
    assert 'mnist_serve_requests_total{endpoint="/v2/models/{name}/infer",model="lenet-pytorch",protocol="http",status="200"}' in text
    assert 'mnist_serve_requests_total{endpoint="/v1/models/{name}/predict",model="lenet-pytorch",protocol="http",status="200"}' in text
    assert 'mnist_serve_batch_size_count{model="lenet-pytorch:1"}' in text
    assert 'mnist_serve_model_info{architecture="cnn",framework="pytorch",model="cnn-pytorch",provider="CPUExecutionProvider",version="1"} 1.0' in text


def test_openapi_documents_the_routes(client: httpx.Client) -> None:
    spec = client.get("/openapi.json").json()
    for path in ("/v1/models/{name}/predict", "/v1/models/{name}/activations", "/v1/models/{name}/explain",
                 "/v1/models/{name}/layers/{layer}/weights", "/v2/models/{name}/infer"):
        assert path in spec["paths"]
    assert "example" in spec["paths"]["/v1/predict"]["post"]["requestBody"]["content"]["application/json"]
