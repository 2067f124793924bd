"""The page's insight endpoints through a real server: attribution, unit inspection, the input
check and the frameworks compared; their answers against ONNX Runtime on the same files, and their
errors (404 for what is not served, 422 for what the model does not have, 415 for a body they do
not read)."""

from __future__ import annotations

import base64

import httpx
import numpy as np
import onnxruntime as ort
import pytest

from contract.spec import ARCHITECTURES, LOGITS, PROBABILITIES
from service import insight_cost
from tests.service.conftest import ort_session
from tests.service.payloads import encode_png

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def http(live_server: str) -> httpx.Client:
    with httpx.Client(base_url=live_server, timeout=60) as session:
        yield session


@pytest.fixture(scope="module")
def digit(mnist_test_set: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, int]:
    images, labels = mnist_test_set
    return images[0], int(labels[0])


def body_of(image: np.ndarray) -> dict[str, str]:
    return {"image_base64": base64.b64encode(encode_png(image)).decode("ascii")}


def reference(name: str, image: np.ndarray) -> dict[str, np.ndarray]:
    session: ort.InferenceSession = ort_session(name)
    names = [output.name for output in session.get_outputs()]
    return dict(zip(names, session.run(None, {"image": image[None, None].astype(np.float32)})))


@pytest.mark.parametrize("name", ["cnn-pytorch", "lenet-tensorflow"])
def test_attribution(http: httpx.Client, digit: tuple[np.ndarray, int], name: str) -> None:
    image, label = digit
    response = http.post(f"/v1/models/{name}/attribution", params={"versus": (label + 1) % 10}, json=body_of(image))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["target"] == body["predicted"] == label and body["versus"] == (label + 1) % 10
    assert body["exact"] is True and body["note"] is None
    expected = reference(name, np.asarray(body["input"], np.float32))
    np.testing.assert_allclose(body["probabilities"], expected[PROBABILITIES][0], rtol=1e-4, atol=1e-6)
    logits = expected[LOGITS][0]
    assert body["value"] == pytest.approx(float(logits[label] - logits[(label + 1) % 10]), rel=1e-4)
    for method in ("saliency", "gradient_x_input", "hires_cam", "grad_cam"):
        shown = body["maps"][method]
        assert shown["shape"] == [28, 28]
        assert shown["max_abs"] == pytest.approx(float(np.max(np.abs(shown["values"]))), rel=1e-3)
    native = body["maps"]["hires_cam"]["native"]["shape"]
    assert native == ([14, 14] if name.startswith("cnn") else [8, 8])

    same = http.post(f"/v1/models/{name}/attribution", params={"target": label, "versus": label}, json=body_of(image))
    assert same.status_code == 422 and "versus" in same.json()["error"]
    implied = http.post(f"/v1/models/{name}/attribution", params={"versus": label}, json=body_of(image)).json()
    assert implied["versus"] is None  # against the predicted digit itself: there is nothing to compare


def test_inspect(http: httpx.Client, digit: tuple[np.ndarray, int]) -> None:
    image, _ = digit
    response = http.post("/v1/models/cnn-tensorflow/inspect", params={"layer": "pool2", "unit": 7}, json=body_of(image))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["unit"]["layer"] == "pool2" and body["producer"]["layer"] == "conv4"
    assert body["kernels"]["shape"] == [64, 3, 3] and body["input_layer"] == "relu3"
    assert len(body["contributions"]) == 64
    assert sum(item["value"] for item in body["contributions"]) + body["bias"] == pytest.approx(body["pre_activation"], abs=1e-3)
    expected = reference("cnn-tensorflow", np.asarray(http.post("/v1/models/cnn-tensorflow/predict",
                                                                params={"include_input": "true"},
                                                                json=body_of(image)).json()["inputs"][0], np.float32))
    pooled = expected["pool2"][0, 7]
    y, x = body["unit"]["y"], body["unit"]["x"]
    assert body["value"] == pytest.approx(float(pooled[y, x]), rel=1e-4, abs=1e-5)
    assert (y, x) == np.unravel_index(int(np.argmax(pooled)), pooled.shape)  # by default, where the map is largest

    at = http.post("/v1/models/cnn-tensorflow/inspect", params={"layer": "conv1", "unit": 3, "at": "0,27"}, json=body_of(image))
    assert (at.json()["unit"]["y"], at.json()["unit"]["x"]) == (0, 27)
    assert at.json()["field"] == {"top": 0, "left": 26, "bottom": 1, "right": 27}  # a 3x3 kernel, clipped at the corner
    dense = http.post("/v1/models/cnn-tensorflow/inspect", params={"layer": "fc1", "unit": 9}, json=body_of(image)).json()
    assert dense["kernels"]["shape"] == [64, 7, 7] and dense["input_layer"] == "pool2"  # fc1's weights as pool2's maps

    for params, status in (({"layer": "conv9"}, 404), ({"layer": "conv1", "unit": 32}, 404),
                           ({"layer": "conv3", "at": "20,3"}, 422), ({"layer": "fc1", "at": "1,1"}, 422),
                           ({"at": "1"}, 422)):
        refused = http.post("/v1/models/cnn-tensorflow/inspect", params=params, json=body_of(image))
        assert refused.status_code == status, (params, refused.text)


def test_input_check(http: httpx.Client, digit: tuple[np.ndarray, int]) -> None:
    image, label = digit
    large = np.kron(255 - image, np.ones((10, 10), np.uint8))  # dark on light, 280x280
    body = http.post("/v1/models/cnn-pytorch/input-check", json=body_of(large)).json()
    assert body["preprocessed"] is True and body["warnings"] == [] and body["predicted"] == label
    assert body["source"] == {"height": 280, "width": 280} and body["crop"] is not None
    crop = body["crop"]
    assert max(crop["bottom"] - crop["top"], crop["right"] - crop["left"]) + 1 == pytest.approx(20 / body["scale"])
    assert len(body["ink"]["rows"]) == 56 and len(body["input"]) == 28
    activations = http.post("/v1/models/cnn-pytorch/activations", params={"layers": "conv1"}, json=body_of(large)).json()
    np.testing.assert_allclose(body["input"], activations["input"], atol=1e-4)  # the same preprocessing

    blank = http.post("/v1/models/cnn-pytorch/input-check", json=body_of(np.full((40, 40), 255, np.uint8))).json()
    assert [warning["code"] for warning in blank["warnings"]] == ["blank"] and blank["crop"] is None
    raw = http.post("/v1/models/cnn-pytorch/input-check", json={"image": (image / 255).round(4).tolist()}).json()
    assert raw["preprocessed"] is False and raw["crop"] is None  # an array is the input as it is
    assert http.post("/v1/models/cnn-pytorch/input-check", content=b"x",
                     headers={"Content-Type": "text/plain"}).status_code == 415
    assert http.post("/v1/models/cnn-pytorch/input-check", json={"images": []}).status_code == 422


def test_compare(http: httpx.Client, digit: tuple[np.ndarray, int]) -> None:
    image, label = digit
    body = http.post("/v1/compare", json=body_of(image)).json()  # the default pair
    assert [model["model"] for model in body["models"]] == ["cnn-pytorch", "cnn-tensorflow"]
    assert body["saliency"]["target"] == label and body["probabilities"]["same_prediction"] is True
    layers = {layer["name"]: layer for layer in body["layers"]}
    assert layers["flatten"]["agreement"] == pytest.approx(layers["pool2"]["agreement"])
    assert len(layers["conv1"]["pairs"]) == 32 and sorted(pair["b"] for pair in layers["conv1"]["pairs"]) == list(range(32))
    seen = np.asarray(http.post("/v1/models/cnn-pytorch/predict", params={"include_input": "true"},
                                json=body_of(image)).json()["inputs"][0], np.float32)
    first, second = reference("cnn-pytorch", seen), reference("cnn-tensorflow", seen)
    np.testing.assert_allclose(layers["fc2"]["differences"], first[LOGITS][0] - second[LOGITS][0], atol=1e-3)
    np.testing.assert_allclose(body["models"][0]["probabilities"], first[PROBABILITIES][0], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(body["probabilities"]["difference"], first[PROBABILITIES][0] - second[PROBABILITIES][0],
                               atol=1e-5)

    named = http.post("/v1/compare", params={"models": "lenet-tensorflow:1,lenet-pytorch", "target": 3}, json=body_of(image))
    assert named.status_code == 200 and named.json()["saliency"]["target"] == 3
    for models, status in (("cnn-pytorch,lenet-pytorch", 422), ("cnn-pytorch", 422), ("cnn-pytorch,cnn-pytorch", 422),
                           ("cnn-pytorch,nope", 404), ("cnn-pytorch:9,cnn-tensorflow", 404)):
        refused = http.post("/v1/compare", params={"models": models}, json=body_of(image))
        assert refused.status_code == status, (models, refused.text)


def test_answers_stay_within_their_price(http: httpx.Client, mnist_test_set: tuple[np.ndarray, np.ndarray]) -> None:
    """Each answer, for inputs that make its numbers long (noise, strokes) and its largest units,
    is no longer than what the request was priced at before its body was read."""
    images, _ = mnist_test_set
    noise = np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8)
    bodies = [body_of(images[1]), {"image": (noise / 255).tolist()}]
    for name in ("cnn-pytorch", "lenet-tensorflow"):
        layers = ARCHITECTURES[name.split("-")[0]]
        for body in bodies:
            answer = http.post(f"/v1/models/{name}/attribution", json=body)
            assert len(answer.content) <= insight_cost.attribution(layers).response_bytes
            for layer, unit in (("conv1", 0), ("pool2", 3), ("flatten", 11), ("fc1", 2), ("fc2", 4)):
                answer = http.post(f"/v1/models/{name}/inspect", params={"layer": layer, "unit": unit}, json=body)
                assert answer.status_code == 200, answer.text
                assert len(answer.content) <= insight_cost.inspect(layers).response_bytes, (name, layer)
            answer = http.post(f"/v1/models/{name}/input-check", json=body)
            assert len(answer.content) <= insight_cost.input_check().response_bytes
        architecture = name.split("-")[0]
        answer = http.post("/v1/compare", params={"models": f"{architecture}-pytorch,{architecture}-tensorflow"},
                           json=bodies[1])
        assert len(answer.content) <= insight_cost.compare(layers).response_bytes
