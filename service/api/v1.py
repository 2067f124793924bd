"""The V1 JSON API: models, predict, activations, weights, explain. HTTP only."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response

from service import encoding as enc
from service import explain as occlusion
from service.api.common import HotRoute, JSONBody, dataplane_of, error_responses, read_images
from service.codec import to_batch
from service.dataplane import predictions
from service.errors import NotFound, Unprocessable
from service.registry import ModelVersion
from contract.spec import INPUT_NAME, INPUT_SHAPE, PROBABILITIES, WEIGHTED_KINDS

router = APIRouter(prefix="/v1", tags=["v1"])

ModelName = Annotated[str, Path(description="model name, e.g. cnn-pytorch")]
Version = Annotated[str, Path(description="model version, e.g. 1 (an unknown one is a 404)")]
Preprocess = Annotated[bool | None, Query(description="MNIST-style preprocessing (default: on for image files, off for arrays)")]
IncludeInput = Annotated[bool, Query(description="return the 28x28 input(s) the model saw")]
TopK = Annotated[int, Query(ge=1, le=10, description="how many ranked labels to return")]

_ROW = {"type": "array", "items": {"type": "number"}, "minItems": 28, "maxItems": 28}
_IMAGE = {"type": "array", "items": _ROW, "minItems": 28, "maxItems": 28,
          "description": "28x28 pixels: all integers = 0-255, any decimal number = [0, 1]; white digit on black"}
_B64 = {"type": "string", "description": "base64 of an image file (PNG, JPEG, BMP, GIF, WebP, ...) or a data: URL"}
_ONE = {"type": "object", "additionalProperties": False}
_SINGLE_FORMS = [
    {**_ONE, "properties": {"image": _IMAGE}, "required": ["image"]},
    {**_ONE, "properties": {"image_base64": _B64}, "required": ["image_base64"]},
]
_BATCH_FORMS = _SINGLE_FORMS + [
    {**_ONE, "properties": {"images": {"type": "array", "items": _IMAGE, "minItems": 1}}, "required": ["images"]},
    {**_ONE, "properties": {"images_base64": {"type": "array", "items": _B64, "minItems": 1}}, "required": ["images_base64"]},
]
_MULTIPART = {"multipart/form-data": {"schema": {"type": "object", "properties": {
    "file": {"type": "array", "items": {"type": "string", "format": "binary"}}}, "required": ["file"]}}}
_EXAMPLE_SEVEN = [[0] * 28 for _ in range(6)] + [[0] * 6 + [255] * 16 + [0] * 6] + \
    [[0] * (20 - i // 2) + [255] * 2 + [0] * (6 + i // 2) for i in range(14)] + [[0] * 28 for _ in range(7)]


def _body(forms: list[dict[str, Any]], example: dict[str, Any]) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {
        "application/json": {"schema": {"oneOf": forms}, "example": example}, **_MULTIPART}}}


BATCH_BODY = _body(_BATCH_FORMS, {"image": _EXAMPLE_SEVEN})
SINGLE_BODY = _body(_SINGLE_FORMS, {"image": _EXAMPLE_SEVEN})


def model_info(model: ModelVersion, versions: list[int]) -> dict[str, Any]:
    meta = model.metadata
    config = model.batcher.config
    return {
        "name": model.name, "version": model.version, "versions": versions,
        "framework": meta.framework, "framework_version": meta.framework_version, "architecture": meta.architecture,
        "test_accuracy": meta.test_accuracy, "test_loss": meta.test_loss, "provider": model.runtime.provider,
        "ready": True, "created": meta.created, "flatten_order": meta.flatten_order,
        "input": {"name": INPUT_NAME, "datatype": "FP32", "shape": [-1, *INPUT_SHAPE]},
        "layers": [layer.public() for layer in model.layers],
        "outputs": list(model.outputs),
        "batching": {"max_batch_size": config.max_batch_size, "max_queue_delay_ms": config.max_queue_delay_s * 1000,
                     "max_queue_size": config.max_queue_size, "instances": config.instances,
                     "request_timeout_s": config.timeout_s},
        "training": {key: meta.training.get(key) for key in ("epochs", "batch_size", "optimizer", "learning_rate",
                                                              "schedule", "augment_shift", "seed", "train_images")},
    }


@router.get("/models", summary="List the served models (latest version of each)")
async def list_models(request: Request) -> JSONBody:
    plane = dataplane_of(request)
    registry = plane.registry
    return JSONBody({"default_model": plane.settings.default_model,
                     "models": [model_info(mv, registry.versions(mv.name)) for mv in registry.latest()]})


@router.get("/models/{name}", summary="Describe a model (latest version)", responses=error_responses(404))
@router.get("/models/{name}/versions/{version}", summary="Describe a model version", responses=error_responses(404))
async def get_model(request: Request, name: ModelName, version: Version | None = None) -> JSONBody:
    plane = dataplane_of(request)
    model = plane.model(name, version)
    return JSONBody(model_info(model, plane.registry.versions(name)))


def _input_rows(images: np.ndarray) -> np.ndarray:
    return np.round(images, 4)


@router.post("/predict", summary="Classify with the default model", openapi_extra=BATCH_BODY,
             responses=error_responses(400, 404, 413, 415, 422, 503))
@router.post("/models/{name}/predict", summary="Classify digits", openapi_extra=BATCH_BODY,
             responses=error_responses(400, 404, 413, 415, 422, 503))
@router.post("/models/{name}/versions/{version}/predict", summary="Classify digits with a model version",
             openapi_extra=BATCH_BODY, responses=error_responses(400, 404, 413, 415, 422, 503))
async def predict(request: Request, name: ModelName | None = None, version: Version | None = None,
                  preprocess: Preprocess = None, include_input: IncludeInput = False, top_k: TopK = 3) -> JSONBody:
    return await run_predict(request, name, version, preprocess, include_input, top_k)


async def run_predict(request: Request, name: str | None, version: str | None, preprocess: bool | None,
                      include_input: bool, top_k: int) -> JSONBody:
    plane = dataplane_of(request)
    model = plane.model(name, version)
    parsed = await read_images(request, preprocess, single=False)
    result = await plane.infer(model, to_batch(parsed.images), (PROBABILITIES,))
    body: dict[str, Any] = {"model": model.name, "version": model.version,
                            "predictions": predictions(result.outputs[PROBABILITIES], top_k)}
    if include_input:
        body["inputs"] = _input_rows(parsed.images)
    return JSONBody(body)


_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def _query_bool(request: Request, key: str) -> bool | None:
    value = request.query_params.get(key)
    if value is None:
        return None
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise Unprocessable(f"query.{key}: Input should be a valid boolean, unable to interpret input")


def _query_top_k(request: Request) -> int:
    value = request.query_params.get("top_k")
    if value is None:
        return 3
    if not (value.isascii() and value.isdigit() and 1 <= int(value) <= 10):
        raise Unprocessable("query.top_k: must be an integer from 1 to 10")
    return int(value)


async def _predict_endpoint(request: Request) -> Response:
    params = request.path_params
    return await run_predict(request, params.get("name"), params.get("version"), _query_bool(request, "preprocess"),
                             bool(_query_bool(request, "include_input")), _query_top_k(request))


# predict is the hot path: plain Starlette routes ahead of FastAPI's skip the per-request dependency
# solving; they validate the same three query options by hand. The FastAPI declarations above carry
# the OpenAPI document.
FAST_ROUTES = [
    HotRoute("/v1/predict", _predict_endpoint, methods=["POST"]),
    HotRoute("/v1/models/{name}/predict", _predict_endpoint, methods=["POST"]),
    HotRoute("/v1/models/{name}/versions/{version}/predict", _predict_endpoint, methods=["POST"]),
]


def _layer_names(model: ModelVersion, layers: str | None) -> list[str]:
    if not layers:
        return [layer.name for layer in model.layers]
    names = [name.strip() for name in layers.split(",") if name.strip()]
    for name in names:
        model.layer(name)
    return names


@router.post("/activations", summary="Per-layer activations of the default model", openapi_extra=SINGLE_BODY,
             responses=error_responses(400, 404, 413, 415, 422, 503))
@router.post("/models/{name}/activations", summary="Per-layer activations for one image", openapi_extra=SINGLE_BODY,
             responses=error_responses(400, 404, 413, 415, 422, 503))
@router.post("/models/{name}/versions/{version}/activations", summary="Per-layer activations, model version",
             openapi_extra=SINGLE_BODY, responses=error_responses(400, 404, 413, 415, 422, 503))
async def activations(
    request: Request, name: ModelName | None = None, version: Version | None = None,
    layers: Annotated[str | None, Query(description="comma-separated layer names (default: all)")] = None,
    encoding: Annotated[Literal["json", "base64", "png"], Query(description="how layer values are sent")] = "json",
    dtype: Annotated[Literal["float32", "float16"], Query(description="base64 encoding's float type")] = "float32",
    bins: Annotated[int, Query(ge=1, le=256, description="histogram bins")] = 20,
    include_input: IncludeInput = True, preprocess: Preprocess = None, top_k: TopK = 3,
) -> JSONBody:
    plane = dataplane_of(request)
    model = plane.model(name, version)
    names = _layer_names(model, layers)
    parsed = await read_images(request, preprocess, single=True)
    result = await plane.infer(model, to_batch(parsed.images), (PROBABILITIES, *names))

    def shape_layers() -> list[dict[str, Any]]:
        shaped = []
        for layer_name in names:
            spec = model.layer(layer_name)
            values = result.outputs[layer_name][0]
            shaped.append({"name": spec.name, "kind": spec.kind, "shape": list(spec.shape),
                           "stats": enc.statistics(values, bins), "encoding": encoding,
                           "data": enc.encode(values, encoding, dtype)})
        return shaped

    body: dict[str, Any] = {"model": model.name, "version": model.version,
                            "prediction": predictions(result.outputs[PROBABILITIES], top_k)[0],
                            "layers": await asyncio.to_thread(shape_layers)}
    if include_input:
        body["input"] = _input_rows(parsed.images[0])
    return JSONBody(body)


@router.get("/models/{name}/layers/{layer}/weights", summary="A conv or dense layer's weights and bias",
            responses=error_responses(404, 422))
@router.get("/models/{name}/versions/{version}/layers/{layer}/weights", summary="Weights of a model version's layer",
            responses=error_responses(404, 422))
async def weights(
    request: Request, name: ModelName, layer: Annotated[str, Path(max_length=64)], version: Version | None = None,
    encoding: Annotated[Literal["json", "base64", "png"], Query()] = "json",
    dtype: Annotated[Literal["float32", "float16"], Query()] = "float32",
    bins: Annotated[int, Query(ge=1, le=256)] = 20,
) -> JSONBody:
    model = dataplane_of(request).model(name, version)
    spec = model.layer(layer)
    if spec.kind not in WEIGHTED_KINDS:
        raise NotFound(f"layer {layer!r} is a {spec.kind} layer and has no weights; "
                       f"weighted layers: {', '.join(model.weights)}")
    params = model.weights[layer]

    def encode() -> dict[str, Any]:
        return {
            role: {"shape": list(values.shape), "stats": enc.statistics(values, bins), "encoding": encoding,
                   "data": enc.encode_weight(values, encoding, dtype)}
            for role, values in params.items()
        }

    encoded = await asyncio.to_thread(encode)
    layout = "OIHW" if spec.kind == "conv" else "out_in"
    return JSONBody({"model": model.name, "version": model.version, "layer": layer, "kind": spec.kind,
                     "layout": layout, **encoded})


@router.post("/explain", summary="Occlusion sensitivity with the default model", openapi_extra=SINGLE_BODY,
             responses=error_responses(400, 404, 413, 415, 422, 503))
@router.post("/models/{name}/explain", summary="Occlusion sensitivity: where the model looks",
             openapi_extra=SINGLE_BODY, responses=error_responses(400, 404, 413, 415, 422, 503))
@router.post("/models/{name}/versions/{version}/explain", summary="Occlusion sensitivity, model version",
             openapi_extra=SINGLE_BODY, responses=error_responses(400, 404, 413, 415, 422, 503))
async def explain(
    request: Request, name: ModelName | None = None, version: Version | None = None,
    patch: Annotated[int, Query(ge=1, le=28, description="side of the square occluding patch, pixels")] = 5,
    stride: Annotated[int, Query(ge=1, le=28, description="step between patch positions, pixels")] = 2,
    target: Annotated[int | None, Query(ge=0, le=9, description="class whose probability is watched (default: predicted)")] = None,
    fill: Annotated[float, Query(ge=0.0, le=1.0, description="value the patch is filled with")] = 0.0,
    preprocess: Preprocess = None, include_input: IncludeInput = True,
) -> JSONBody:
    plane = dataplane_of(request)
    model = plane.model(name, version)
    plan = occlusion.make_plan(patch, stride, fill)
    parsed = await read_images(request, preprocess, single=True)
    image = parsed.images[0]
    batch = occlusion.occluded_batch(image, plan)
    result = await plane.infer(model, to_batch(batch), (PROBABILITIES,))
    probabilities = result.outputs[PROBABILITIES]
    chosen = int(np.argmax(probabilities[0])) if target is None else target
    drops, heatmap = occlusion.sensitivity(probabilities, chosen, plan)
    body: dict[str, Any] = {
        "model": model.name, "version": model.version, "target": chosen, "predicted": int(np.argmax(probabilities[0])),
        "probability": float(probabilities[0, chosen]), "patch": patch, "stride": stride, "fill": fill,
        "shape": list(drops.shape), "map": np.round(drops, 5), "heatmap": np.round(heatmap, 5),
    }
    if include_input:
        body["input"] = _input_rows(image)
    return JSONBody(body)

