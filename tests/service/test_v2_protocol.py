"""The V2 API with hand-built requests: what the Triton client never sends (nested data, UINT8 as
JSON, broken binary bodies, wrong shapes and types) and the protocol's bodies byte by byte."""

from __future__ import annotations

import json
import struct
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
import pytest

from contract.spec import INPUT_NAME, LOGITS, PROBABILITIES, output_names
from tests.conftest import latest_version
from tests.service.wire import HEADER_LENGTH, binary_body, decode_response

MODEL = "cnn-pytorch"
INFER = f"/v2/models/{MODEL}/infer"
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def digits(mnist_test_set) -> np.ndarray:
    """Three test digits, uint8 [3, 1, 28, 28]."""
    return np.ascontiguousarray(mnist_test_set[0][:3, None])


def scaled(raw: np.ndarray) -> np.ndarray:
    return raw.astype(np.float32) / np.float32(255.0)


def tensor(datatype: str, shape: list[int], **fields: Any) -> dict[str, Any]:
    return {"name": INPUT_NAME, "datatype": datatype, "shape": shape, **fields}


def split_binary_response(response: httpx.Response) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    assert response.headers["content-type"] == "application/octet-stream"
    return decode_response(response)


def json_outputs(response: httpx.Response) -> dict[str, np.ndarray]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    return decode_response(response)[1]


def assert_error(response: httpx.Response, status: int, *fragments: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert list(body) == ["error"] and isinstance(body["error"], str)
    for fragment in fragments:
        assert fragment in body["error"], body["error"]


# ---- health and metadata ---------------------------------------------------------------------

def test_health_and_server_metadata(http: httpx.Client) -> None:
    assert http.get("/v2/health/live").status_code == 200
    assert http.get("/v2/health/ready").status_code == 200
    metadata = http.get("/v2").json()
    assert metadata["name"] == "mnist-serve" and isinstance(metadata["version"], str)
    assert "binary_tensor_data" in metadata["extensions"]


def test_model_metadata_with_and_without_version_agree(http: httpx.Client) -> None:
    latest, pinned = http.get(f"/v2/models/{MODEL}"), http.get(f"/v2/models/{MODEL}/versions/{latest_version(MODEL)}")
    assert latest.status_code == pinned.status_code == 200
    assert latest.json() == pinned.json()
    assert [output["name"] for output in latest.json()["outputs"]] == output_names("cnn")


def test_model_ready(http: httpx.Client) -> None:
    assert http.get(f"/v2/models/{MODEL}/ready").status_code == 200
    assert http.get(f"/v2/models/{MODEL}/versions/1/ready").status_code == 200


@pytest.mark.parametrize("path", [
    "/v2/models/no-such-model", "/v2/models/no-such-model/ready", f"/v2/models/{MODEL}/versions/99",
    f"/v2/models/{MODEL}/versions/99/ready"])
def test_unknown_model_or_version_is_404(http: httpx.Client, path: str) -> None:
    assert_error(http.get(path), 404)


@pytest.mark.parametrize("path", ["/v2/models/no-such-model/infer", f"/v2/models/{MODEL}/versions/99/infer"])
def test_infer_on_unknown_model_or_version_is_404(http: httpx.Client, path: str) -> None:
    body = {"inputs": [tensor("UINT8", [1, 1, 28, 28], data=[0] * 784)]}
    assert_error(http.post(path, json=body), 404, "99" if "99" in path else "no-such-model")


# ---- JSON inference --------------------------------------------------------------------------

def test_nested_and_flat_data_give_onnxruntime_results(http: httpx.Client, reference: ort.InferenceSession,
                                                       digits: np.ndarray) -> None:
    batch = scaled(digits)
    expected = reference.run([PROBABILITIES], {INPUT_NAME: batch})[0]
    for data in (batch.tolist(), batch.ravel().tolist(), batch.reshape(3, 784).tolist()):
        body = {"inputs": [tensor("FP32", [3, 1, 28, 28], data=data)], "outputs": [{"name": PROBABILITIES}]}
        got = json_outputs(http.post(INFER, json=body))[PROBABILITIES]
        np.testing.assert_allclose(got, expected, rtol=0, atol=TOLERANCE)


def test_uint8_json_data_is_the_0_255_scale(http: httpx.Client, reference: ort.InferenceSession,
                                            digits: np.ndarray) -> None:
    body = {"inputs": [tensor("UINT8", [3, 1, 28, 28], data=digits.tolist())], "outputs": [{"name": LOGITS}]}
    got = json_outputs(http.post(INFER, json=body))[LOGITS]
    np.testing.assert_allclose(got, reference.run([LOGITS], {INPUT_NAME: scaled(digits)})[0], rtol=0, atol=TOLERANCE)


def test_id_is_echoed_and_absent_when_not_sent(http: httpx.Client, digits: np.ndarray) -> None:
    body = {"inputs": [tensor("UINT8", [1, 1, 28, 28], data=digits[0].ravel().tolist())],
            "outputs": [{"name": PROBABILITIES}]}
    assert "id" not in http.post(INFER, json=body).json()
    echoed = http.post(f"/v2/models/{MODEL}/versions/1/infer", json={**body, "id": "digit-7"}).json()
    assert echoed["id"] == "digit-7"
    assert echoed["model_name"] == MODEL and echoed["model_version"] == "1"


def test_omitted_outputs_means_every_output(http: httpx.Client, reference: ort.InferenceSession,
                                            digits: np.ndarray) -> None:
    body = {"inputs": [tensor("UINT8", [1, 1, 28, 28], data=digits[0].ravel().tolist())]}
    got = json_outputs(http.post(INFER, json=body))
    names = output_names("cnn")
    assert list(got) == names
    for name, expected in zip(names, reference.run(names, {INPUT_NAME: scaled(digits[:1])})):
        np.testing.assert_allclose(got[name], expected, rtol=1e-4, atol=1e-4, err_msg=name)


# ---- binary inference ------------------------------------------------------------------------

def test_binary_request_and_response_by_hand(http: httpx.Client, reference: ort.InferenceSession,
                                             digits: np.ndarray) -> None:
    batch = scaled(digits)
    header = {"id": "b1", "inputs": [tensor("FP32", [3, 1, 28, 28], parameters={"binary_data_size": batch.nbytes})],
              "outputs": [{"name": PROBABILITIES, "parameters": {"binary_data": True}},
                          {"name": "relu1", "parameters": {"binary_data": True}}]}
    content, headers = binary_body(header, batch.astype("<f4").tobytes())
    response = http.post(INFER, content=content, headers=headers)
    assert response.status_code == 200, response.text
    described, arrays = split_binary_response(response)
    assert described["id"] == "b1"
    assert described["outputs"][0] == {"name": PROBABILITIES, "datatype": "FP32", "shape": [3, 10],
                                       "parameters": {"binary_data_size": 3 * 10 * 4}}
    expected = reference.run([PROBABILITIES, "relu1"], {INPUT_NAME: batch})
    np.testing.assert_allclose(arrays[PROBABILITIES], expected[0], rtol=0, atol=TOLERANCE)
    np.testing.assert_allclose(arrays["relu1"], expected[1], rtol=1e-4, atol=1e-4)


def test_binary_data_output_default_with_a_json_exception(http: httpx.Client, reference: ort.InferenceSession,
                                                          digits: np.ndarray) -> None:
    header = {"inputs": [tensor("UINT8", [3, 1, 28, 28], parameters={"binary_data_size": digits.nbytes})],
              "outputs": [{"name": LOGITS}, {"name": PROBABILITIES, "parameters": {"binary_data": False}}],
              "parameters": {"binary_data_output": True}}
    content, headers = binary_body(header, digits.tobytes())
    described, arrays = split_binary_response(http.post(INFER, content=content, headers=headers))
    assert "parameters" in described["outputs"][0] and "data" in described["outputs"][1]
    expected = reference.run([LOGITS, PROBABILITIES], {INPUT_NAME: scaled(digits)})
    np.testing.assert_allclose(arrays[LOGITS], expected[0], rtol=0, atol=TOLERANCE)
    np.testing.assert_allclose(arrays[PROBABILITIES], expected[1], rtol=0, atol=TOLERANCE)


def test_json_request_may_ask_for_binary_outputs(http: httpx.Client, digits: np.ndarray) -> None:
    body = {"inputs": [tensor("UINT8", [1, 1, 28, 28], data=digits[0].ravel().tolist())],
            "outputs": [{"name": PROBABILITIES, "parameters": {"binary_data": True}}]}
    response = http.post(INFER, json=body)
    assert response.status_code == 200, response.text
    _, arrays = split_binary_response(response)
    assert arrays[PROBABILITIES].shape == (1, 10)
    assert abs(float(arrays[PROBABILITIES].sum()) - 1.0) < 1e-5


def test_fp64_binary_input(http: httpx.Client, reference: ort.InferenceSession, digits: np.ndarray) -> None:
    wide = scaled(digits).astype("<f8")
    header = {"inputs": [tensor("FP64", [3, 1, 28, 28], parameters={"binary_data_size": wide.nbytes})],
              "outputs": [{"name": PROBABILITIES}]}
    content, headers = binary_body(header, wide.tobytes())
    got = json_outputs(http.post(INFER, content=content, headers=headers))[PROBABILITIES]
    np.testing.assert_allclose(got, reference.run([PROBABILITIES], {INPUT_NAME: scaled(digits)})[0],
                               rtol=0, atol=TOLERANCE)


# ---- errors ----------------------------------------------------------------------------------

def test_wrong_shape(http: httpx.Client) -> None:
    for shape in ([1, 28, 28], [1, 1, 28, 27], [0, 1, 28, 28], [-1, 1, 28, 28]):
        body = {"inputs": [tensor("FP32", shape, data=[0.0] * 784)]}
        assert_error(http.post(INFER, json=body), 400, "shape", "[-1, 1, 28, 28]")


def test_data_that_does_not_fill_the_shape(http: httpx.Client) -> None:
    body = {"inputs": [tensor("FP32", [2, 1, 28, 28], data=[0.0] * 784)]}
    assert_error(http.post(INFER, json=body), 400, "784 values", "1568")


@pytest.mark.parametrize("datatype", ["INT32", "BYTES", "BF16", "fp32"])
def test_wrong_datatype(http: httpx.Client, datatype: str) -> None:
    body = {"inputs": [tensor(datatype, [1, 1, 28, 28], data=[0] * 784)]}
    assert_error(http.post(INFER, json=body), 400, repr(datatype), "FP32", "UINT8")


@pytest.mark.parametrize("datatype, value, fragment", [
    ("UINT8", 256, "0-255"), ("UINT8", -1, "0-255"), ("UINT8", 0.5, "0-255"),
    ("FP32", 255.0, "[0, 1]"), ("FP32", "dark", "FP32 numbers")])
def test_values_out_of_range_or_of_the_wrong_kind(http: httpx.Client, datatype: str, value: Any,
                                                  fragment: str) -> None:
    body = {"inputs": [tensor(datatype, [1, 1, 28, 28], data=[value] + [0] * 783)]}
    assert_error(http.post(INFER, json=body), 400, fragment)


def test_nan_in_binary_data(http: httpx.Client) -> None:
    batch = np.zeros((1, 1, 28, 28), "<f4")
    batch[0, 0, 3, 4] = np.nan
    header = {"inputs": [tensor("FP32", [1, 1, 28, 28], parameters={"binary_data_size": batch.nbytes})]}
    content, headers = binary_body(header, batch.tobytes())
    assert_error(http.post(INFER, content=content, headers=headers), 400, "finite")


def test_unknown_input_and_output_names(http: httpx.Client) -> None:
    body = {"inputs": [{**tensor("FP32", [1, 1, 28, 28], data=[0.0] * 784), "name": "pixels"}]}
    assert_error(http.post(INFER, json=body), 400, "'pixels'", f"'{INPUT_NAME}'")
    body = {"inputs": [tensor("FP32", [1, 1, 28, 28], data=[0.0] * 784)], "outputs": [{"name": "softmax"}]}
    assert_error(http.post(INFER, json=body), 400, "'softmax'", PROBABILITIES, "conv1")


def test_truncated_binary_body(http: httpx.Client) -> None:
    raw = np.zeros((2, 1, 28, 28), np.uint8)
    header = {"inputs": [tensor("UINT8", [2, 1, 28, 28], parameters={"binary_data_size": raw.nbytes})]}
    content, headers = binary_body(header, raw.tobytes()[:-100])
    assert_error(http.post(INFER, content=content, headers=headers), 400, "truncated", "1568", "1468")


def test_binary_data_size_that_does_not_match_the_shape(http: httpx.Client) -> None:
    raw = np.zeros((2, 1, 28, 28), np.uint8)
    header = {"inputs": [tensor("UINT8", [2, 1, 28, 28], parameters={"binary_data_size": 784})]}
    content, headers = binary_body(header, raw.tobytes())
    assert_error(http.post(INFER, content=content, headers=headers), 400, "binary_data_size 784", "1568 bytes")


def test_fp32_binary_data_size_counts_bytes_not_values(http: httpx.Client) -> None:
    batch = np.zeros((1, 1, 28, 28), "<f4")
    header = {"inputs": [tensor("FP32", [1, 1, 28, 28], parameters={"binary_data_size": 784})]}
    content, headers = binary_body(header, batch.tobytes())
    assert_error(http.post(INFER, content=content, headers=headers), 400, "binary_data_size 784", "3136 bytes")


def test_bytes_beyond_the_binary_inputs(http: httpx.Client) -> None:
    raw = np.zeros((1, 1, 28, 28), np.uint8)
    header = {"inputs": [tensor("UINT8", [1, 1, 28, 28], parameters={"binary_data_size": raw.nbytes})]}
    content, headers = binary_body(header, raw.tobytes(), b"\x00" * 16)
    assert_error(http.post(INFER, content=content, headers=headers), 400, "16 bytes beyond")


def test_binary_body_without_the_header_length(http: httpx.Client) -> None:
    batch = np.full((1, 1, 28, 28), 0.5, "<f4")
    header = {"inputs": [tensor("FP32", [1, 1, 28, 28], parameters={"binary_data_size": batch.nbytes})]}
    content, _ = binary_body(header, batch.tobytes())
    assert_error(http.post(INFER, content=content), 400, "not valid JSON", HEADER_LENGTH)


@pytest.mark.parametrize("declared, fragment", [
    ("many", "must be an integer"), ("100000", "only"), ("-3", "only"), ("+12", "not valid JSON")])
def test_bad_header_length(http: httpx.Client, declared: str, fragment: str) -> None:
    raw = np.zeros((1, 1, 28, 28), np.uint8)
    header = {"inputs": [tensor("UINT8", [1, 1, 28, 28], parameters={"binary_data_size": raw.nbytes})]}
    content, headers = binary_body(header, raw.tobytes())
    response = http.post(INFER, content=content, headers={**headers, HEADER_LENGTH: declared})
    assert_error(response, 400, fragment)


def test_header_length_past_the_json(http: httpx.Client) -> None:
    raw = np.full((1, 1, 28, 28), 200, np.uint8)
    header = {"inputs": [tensor("UINT8", [1, 1, 28, 28], parameters={"binary_data_size": raw.nbytes})]}
    content, headers = binary_body(header, raw.tobytes())
    declared = int(headers[HEADER_LENGTH]) + 8
    response = http.post(INFER, content=content, headers={**headers, HEADER_LENGTH: str(declared)})
    assert_error(response, 400, "not valid JSON", f"first {declared} bytes")


def test_input_without_data(http: httpx.Client) -> None:
    assert_error(http.post(INFER, json={"inputs": [tensor("FP32", [1, 1, 28, 28])]}), 400, "no 'data'")


def test_batch_over_the_request_limit_is_413(http: httpx.Client) -> None:
    body = {"inputs": [tensor("UINT8", [100_000, 1, 28, 28], data=[0])]}
    assert_error(http.post(INFER, json=body), 413, "100000", "max_images_per_request")


@pytest.mark.parametrize("content, fragment", [
    (b"", "empty"), (b"{\"inputs\": [", "not valid JSON"), (b"[1, 2]", "JSON object"),
    (b"{\"inputs\": []}", "'inputs'"), (b"{\"inputs\": {\"name\": \"image\"}}", "'inputs'"),
    (json.dumps({"id": 7, "inputs": [tensor("UINT8", [1, 1, 28, 28], data=[0] * 784)]}).encode(), "'id'")])
def test_malformed_request_bodies(http: httpx.Client, content: bytes, fragment: str) -> None:
    assert_error(http.post(INFER, content=content, headers={"Content-Type": "application/json"}), 400, fragment)


def test_unsupported_output_extensions_are_refused(http: httpx.Client) -> None:
    body = {"inputs": [tensor("UINT8", [1, 1, 28, 28], data=[0] * 784)],
            "outputs": [{"name": PROBABILITIES, "parameters": {"shared_memory_region": "r0",
                                                               "shared_memory_byte_size": 40}}]}
    assert_error(http.post(INFER, json=body), 400, "shared_memory_region")


def test_error_bodies_carry_a_request_id(http: httpx.Client) -> None:
    response = http.post(INFER, content=b"{}", headers={"X-Request-ID": "trace-v2-1"})
    assert_error(response, 400, "'inputs'")
    assert response.headers["x-request-id"] == "trace-v2-1"


def test_binary_body_layout_is_little_endian(http: httpx.Client, reference: ort.InferenceSession,
                                             digits: np.ndarray) -> None:
    """One image packed value by value with struct, as a client in another language would."""
    values = scaled(digits[:1]).ravel().tolist()
    packed = struct.pack(f"<{len(values)}f", *values)
    header = {"inputs": [tensor("FP32", [1, 1, 28, 28], parameters={"binary_data_size": len(packed)})],
              "outputs": [{"name": LOGITS, "parameters": {"binary_data": True}}]}
    content, headers = binary_body(header, packed)
    _, arrays = split_binary_response(http.post(INFER, content=content, headers=headers))
    logits = struct.unpack("<10f", arrays[LOGITS].tobytes())
    expected = reference.run([LOGITS], {INPUT_NAME: scaled(digits[:1])})[0][0]
    np.testing.assert_allclose(logits, expected, rtol=0, atol=TOLERANCE)
