"""The benchmark's requests: one fixed body per workload, and how to read each answer.

Every workload is POSTed unchanged on every connection, so the load generator only
sends bytes. `decode` turns a response back into probabilities [n, 10], for the
correctness check made before any load.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

import numpy as np
from tritonclient.http import (
    InferenceServerClient,
    InferInput,
    InferRequestedOutput,
    InferResult,
)

IMAGE_SIDE = 28
NUM_CLASSES = 10
BATCH_IMAGES = 256
INFER_HEADER = "Inference-Header-Content-Length"
INT8_SUFFIX = "-int8"

Decoder = Callable[[bytes, Mapping[str, str]], np.ndarray]


@dataclass(frozen=True)
class Workload:
    name: str  # short key, used in results and on the command line
    title: str  # what the table shows
    path: str
    body: bytes
    content_type: str
    images: int
    decode: Decoder
    headers: dict[str, str] = field(default_factory=dict)
    protocol: str = "http"  # or "grpc": the body is a serialized ModelInferRequest for bench.grpc_load
    model: str = ""  # the model the request names (its answers are checked against that model in-process)


def _as_floats(images: np.ndarray) -> np.ndarray:
    """uint8 0..255 images -> float32 0..1 [n, 1, 28, 28]: what every server receives."""
    return (images.astype(np.float32) / 255.0).reshape(-1, 1, IMAGE_SIDE, IMAGE_SIDE)


def _json(document: object) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode()


def _probabilities(values: object, count: int) -> np.ndarray:
    return np.asarray(values, dtype=np.float32).reshape(count, NUM_CLASSES)


def naive_json(image: np.ndarray) -> Workload:
    """The naive server's only request: {"image": 28x28 floats} to /predict."""
    pixels = _as_floats(image[None])[0, 0]

    def decode(body: bytes, headers: Mapping[str, str]) -> np.ndarray:
        return _probabilities(json.loads(body)["probabilities"], 1)

    return Workload("naive-json", "/predict JSON, 1 image", "/predict", _json({"image": pixels.tolist()}),
                    "application/json", 1, decode)


def v1_json(image: np.ndarray) -> Workload:
    """The service's /v1/predict with the same body as the naive server's."""
    pixels = _as_floats(image[None])[0, 0]

    def decode(body: bytes, headers: Mapping[str, str]) -> np.ndarray:
        predictions = json.loads(body)["predictions"]
        return _probabilities([prediction["probabilities"] for prediction in predictions], len(predictions))

    return Workload("v1-json", "/v1 JSON predict, 1 image", "/v1/predict", _json({"image": pixels.tolist()}),
                    "application/json", 1, decode)


def _v2_path(model: str) -> str:
    return f"/v2/models/{model}/infer"


def _decode_v2_json(count: int) -> Decoder:
    def decode(body: bytes, headers: Mapping[str, str]) -> np.ndarray:
        outputs = json.loads(body)["outputs"]
        return _probabilities(next(out["data"] for out in outputs if out["name"] == "probabilities"), count)

    return decode


def v2_json(images: np.ndarray, model: str) -> Workload:
    """Open Inference Protocol JSON: a flat FP32 list, shape [n, 1, 28, 28] (one image: [28, 28] or [1, 28, 28])."""
    batch = _as_floats(images)
    count = len(batch)
    request = {
        "inputs": [{"name": "image", "datatype": "FP32", "shape": list(batch.shape), "data": batch.ravel().tolist()}],
        "outputs": [{"name": "probabilities"}],
    }
    name, title = ("v2-json", "V2 JSON infer, 1 image") if count == 1 else (
        f"v2-json-{count}", f"V2 JSON infer, {count} images")
    return Workload(name, title, _v2_path(model), _json(request), "application/json", count, _decode_v2_json(count))


def decode_v2_binary(body: bytes, headers: Mapping[str, str], count: int) -> np.ndarray:
    """Triton's binary extension, read by tritonclient's own decoder (InferResult.from_response_body)."""
    lowered = {key.lower(): value for key, value in headers.items()}
    length = lowered.get(INFER_HEADER.lower())
    result = InferResult.from_response_body(body, header_length=int(length) if length else None)
    probabilities = result.as_numpy("probabilities")
    if probabilities is None:
        raise ValueError("the response has no probabilities output")
    return _probabilities(probabilities, count)


def v2_binary(images: np.ndarray, model: str) -> Workload:
    """Open Inference Protocol with binary tensors both ways, built by tritonclient.http as it sends them."""
    batch = _as_floats(images)
    image = InferInput("image", list(batch.shape), "FP32")
    image.set_data_from_numpy(batch, binary_data=True)
    body, header_length = InferenceServerClient.generate_request_body(
        [image], outputs=[InferRequestedOutput("probabilities", binary_data=True)])
    count = len(batch)
    name, title = ("v2-binary", "V2 binary infer, 1 image") if count == 1 else (
        f"v2-binary-{count}", f"V2 binary infer, {count} images")

    def decode(answer: bytes, headers: Mapping[str, str]) -> np.ndarray:
        return decode_v2_binary(answer, headers, count)

    return Workload(name, title, _v2_path(model), body, "application/octet-stream", count, decode,
                    headers={INFER_HEADER: str(header_length)})


def grpc_infer(images: np.ndarray, model: str) -> Workload:
    """The Open Inference Protocol over gRPC, raw tensors both ways (as tritonclient.grpc sends them)."""
    from bench.grpc_load import decode_output, infer_request

    count = len(images)
    name, title = ("grpc", "gRPC infer, 1 image") if count == 1 else (f"grpc-{count}", f"gRPC infer, {count} images")

    def decode(answer: bytes, headers: Mapping[str, str]) -> np.ndarray:
        return _probabilities(decode_output(answer), count)

    return Workload(name, title, "", infer_request(_as_floats(images), model), "application/grpc", count, decode,
                    protocol="grpc", model=model)


def _for_model(workload: Workload, model: str, suffix: str = "") -> Workload:
    """The same request on another model (the INT8 variant): its name gains `suffix`."""
    return replace(workload, name=workload.name + suffix, title=f"{workload.title}, {model}", model=model)


def all_workloads(images: np.ndarray, model: str, int8_model: str | None = None) -> dict[str, Workload]:
    """Every request the benchmark can send, by name (bench/matrix.py says which server gets which);
    the INT8 ones only when `int8_model` is served."""
    batch = images[:BATCH_IMAGES]
    workloads = [naive_json(images[0]), v1_json(images[0]), v2_json(images[:1], model), v2_json(batch, model),
                 v2_binary(images[:1], model), v2_binary(batch, model), grpc_infer(images[:1], model),
                 grpc_infer(batch, model)]
    if int8_model:
        workloads += [_for_model(v2_binary(images[:1], int8_model), int8_model, INT8_SUFFIX),
                      _for_model(v2_binary(batch, int8_model), int8_model, INT8_SUFFIX)]
    return {workload.name: replace(workload, model=workload.model or model) for workload in workloads}


def service_workloads(images: np.ndarray, model: str) -> list[Workload]:
    """The four requests sent to the service: three single-image forms and one 256-image batch."""
    by_name = all_workloads(images, model)
    return [by_name[name] for name in ("v1-json", "v2-json", "v2-binary", f"v2-binary-{BATCH_IMAGES}")]


def sample_images(data_dir: str | None = None) -> np.ndarray:
    """The MNIST test set's first 256 digits, uint8 [256, 28, 28] (downloaded when missing)."""
    from training.data import load_split

    return np.ascontiguousarray(load_split("test", data_dir).images[:BATCH_IMAGES])
