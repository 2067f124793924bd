"""The V2 API (Open Inference Protocol + binary tensors) through the official Triton HTTP client,
against a real server on the committed models. Results must equal ONNX Runtime's and /v1's."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from tests.conftest import latest_version, served_models
from contract.spec import ARCHITECTURES, INPUT_NAME, LOGITS, PROBABILITIES, output_names

MODEL = "cnn-pytorch"
SERVED_MODELS = served_models()
PROBABILITY_TOLERANCE = 1e-5
ACTIVATION_TOLERANCE = 1e-4  # activations reach tens; batching may reorder float sums slightly


@pytest.fixture(scope="module")
def client(live_server: str) -> Iterator[triton.InferenceServerClient]:
    connection = triton.InferenceServerClient(urlsplit(live_server).netloc, network_timeout=120.0)
    yield connection
    connection.close()


def as_input(images: np.ndarray) -> np.ndarray:
    """uint8 [n, 28, 28] -> the contract's float32 [n, 1, 28, 28] in [0, 1], as the server scales UINT8."""
    return images[:, None, :, :].astype(np.float32) / np.float32(255.0)


def cnn_layer_shape(layer: str) -> tuple[int, ...]:
    return next(spec.shape for spec in ARCHITECTURES["cnn"] if spec.name == layer)


def fp32_input(batch: np.ndarray, binary: bool) -> triton.InferInput:
    tensor = triton.InferInput(INPUT_NAME, list(batch.shape), "FP32")
    tensor.set_data_from_numpy(batch, binary_data=binary)
    return tensor


def v1_probabilities(http: httpx.Client, images: np.ndarray) -> np.ndarray:
    response = http.post(f"/v1/models/{MODEL}/predict", json={"images": images.tolist()})
    assert response.status_code == 200, response.text
    return np.array([p["probabilities"] for p in response.json()["predictions"]], dtype=np.float32)


def test_server_live_ready_and_metadata(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    metadata = client.get_server_metadata()
    assert metadata["name"] == "mnist-serve"
    assert "binary_tensor_data" in metadata["extensions"]


def test_model_ready(client: triton.InferenceServerClient) -> None:
    assert client.is_model_ready(MODEL)
    assert client.is_model_ready(MODEL, "1")
    assert not client.is_model_ready("no-such-model")
    assert not client.is_model_ready(MODEL, "99")


@pytest.mark.parametrize("model", SERVED_MODELS)
@pytest.mark.parametrize("version", ["", "1"])
def test_model_metadata_lists_every_output_of_the_contract(client: triton.InferenceServerClient, http: httpx.Client,
                                                           model: str, version: str) -> None:
    architecture = http.get(f"/v1/models/{model}").json()["architecture"]
    metadata = client.get_model_metadata(model, version)
    assert metadata["name"] == model
    assert "1" in metadata["versions"]
    assert metadata["platform"] == "onnxruntime_onnx"
    assert metadata["inputs"] == [{"name": INPUT_NAME, "datatype": "FP32", "shape": [-1, 1, 28, 28]}]
    layer_shapes = {layer.name: list(layer.shape) for layer in ARCHITECTURES[architecture]}
    expected = [{"name": name, "datatype": "FP32", "shape": [-1, *layer_shapes.get(name, [10])]}
                for name in output_names(architecture)]
    assert metadata["outputs"] == expected


@pytest.mark.parametrize("binary, layer", [(True, "conv1"), (False, "pool2")], ids=["binary", "json"])
@pytest.mark.parametrize("size", [1, 64])
def test_infer_equals_onnxruntime_and_v1(client: triton.InferenceServerClient, http: httpx.Client,
                                         reference: ort.InferenceSession, mnist_test_set, binary: bool, layer: str,
                                         size: int) -> None:
    images, labels = mnist_test_set
    chosen = images[100 : 100 + size]
    batch = as_input(chosen)
    requested = [triton.InferRequestedOutput(PROBABILITIES, binary_data=binary),
                 triton.InferRequestedOutput(layer, binary_data=binary)]

    result = client.infer(MODEL, [fp32_input(batch, binary)], outputs=requested, request_id=f"req-{size}")

    response = result.get_response()
    assert response["id"] == f"req-{size}"
    assert response["model_name"] == MODEL and response["model_version"] == str(latest_version(MODEL))
    assert [output["name"] for output in response["outputs"]] == [PROBABILITIES, layer]
    assert all(("data" in output) != binary for output in response["outputs"])
    probabilities, activation = result.as_numpy(PROBABILITIES), result.as_numpy(layer)
    expected_probabilities, expected_activation = reference.run([PROBABILITIES, layer], {INPUT_NAME: batch})
    assert probabilities.dtype == np.float32 and probabilities.shape == (size, 10)
    assert activation.shape == expected_activation.shape == (size, *cnn_layer_shape(layer))
    np.testing.assert_allclose(probabilities, expected_probabilities, rtol=0, atol=PROBABILITY_TOLERANCE)
    np.testing.assert_allclose(activation, expected_activation, rtol=ACTIVATION_TOLERANCE, atol=ACTIVATION_TOLERANCE)
    np.testing.assert_allclose(probabilities, v1_probabilities(http, chosen), rtol=0, atol=PROBABILITY_TOLERANCE)
    assert np.mean(probabilities.argmax(axis=1) == labels[100 : 100 + size]) >= 0.9


def test_binary_and_json_responses_are_identical(client: triton.InferenceServerClient, mnist_test_set) -> None:
    batch = as_input(mnist_test_set[0][:8])
    results = [client.infer(MODEL, [fp32_input(batch, binary)],
                            outputs=[triton.InferRequestedOutput(LOGITS, binary_data=binary)]).as_numpy(LOGITS)
               for binary in (True, False)]
    np.testing.assert_array_equal(results[0], results[1])


def test_uint8_input_gives_the_fp32_result(client: triton.InferenceServerClient, mnist_test_set) -> None:
    images = mnist_test_set[0][:4]
    raw = triton.InferInput(INPUT_NAME, [4, 1, 28, 28], "UINT8")
    raw.set_data_from_numpy(np.ascontiguousarray(images[:, None]), binary_data=True)
    wanted = [triton.InferRequestedOutput(PROBABILITIES)]
    from_uint8 = client.infer(MODEL, [raw], outputs=wanted).as_numpy(PROBABILITIES)
    from_fp32 = client.infer(MODEL, [fp32_input(as_input(images), True)], outputs=wanted).as_numpy(PROBABILITIES)
    np.testing.assert_allclose(from_uint8, from_fp32, rtol=0, atol=PROBABILITY_TOLERANCE)


def test_no_requested_outputs_returns_every_output(client: triton.InferenceServerClient,
                                                    reference: ort.InferenceSession, mnist_test_set) -> None:
    batch = as_input(mnist_test_set[0][:1])
    result = client.infer(MODEL, [fp32_input(batch, True)], model_version=str(latest_version(MODEL)))
    names = output_names("cnn")
    assert [output["name"] for output in result.get_response()["outputs"]] == names
    for name, expected in zip(names, reference.run(names, {INPUT_NAME: batch})):
        np.testing.assert_allclose(result.as_numpy(name), expected, rtol=ACTIVATION_TOLERANCE,
                                   atol=ACTIVATION_TOLERANCE, err_msg=name)


@pytest.mark.parametrize("model, version, status", [("no-such-model", "", 404), (MODEL, "99", 404), (MODEL, "0", 404), (MODEL, "abc", 404)])
def test_unknown_model_or_version_is_404(client: triton.InferenceServerClient, model: str, version: str,
                                         status: int) -> None:
    with pytest.raises(InferenceServerException) as raised:
        client.infer(model, [fp32_input(np.zeros((1, 1, 28, 28), np.float32), True)], model_version=version)
    assert raised.value.status() == str(status)
    with pytest.raises(InferenceServerException) as raised:
        client.get_model_metadata(model, version)
    assert raised.value.status() == str(status)
    assert model in raised.value.message()


def test_unknown_output_is_400_with_the_outputs_listed(client: triton.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException) as raised:
        client.infer(MODEL, [fp32_input(np.zeros((1, 1, 28, 28), np.float32), True)],
                     outputs=[triton.InferRequestedOutput("conv9")])
    assert raised.value.status() == "400"
    assert "conv9" in raised.value.message() and PROBABILITIES in raised.value.message()


def test_classification_extension_is_refused_not_ignored(client: triton.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException) as raised:
        client.infer(MODEL, [fp32_input(np.zeros((1, 1, 28, 28), np.float32), True)],
                     outputs=[triton.InferRequestedOutput(PROBABILITIES, class_count=3)])
    assert raised.value.status() == "400"
    assert "classification" in raised.value.message()


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_compressed_requests_give_the_same_result(client: triton.InferenceServerClient, mnist_test_set,
                                                  algorithm: str) -> None:
    batch = as_input(mnist_test_set[0][:8])
    outputs = [triton.InferRequestedOutput(PROBABILITIES, binary_data=True)]
    plain = client.infer(MODEL, [fp32_input(batch, True)], outputs=outputs).as_numpy(PROBABILITIES)
    packed = client.infer(MODEL, [fp32_input(batch, True)], outputs=outputs,
                          request_compression_algorithm=algorithm).as_numpy(PROBABILITIES)
    np.testing.assert_array_equal(packed, plain)
