"""Open Inference Protocol (KServe V2) routes with Triton's binary tensor data extension. HTTP only:
the protocol's bodies are decoded by service.codec and inference runs through the shared data plane."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi.responses import Response

from service import __version__
from service.api.common import HotRoute, JSONBody, dataplane_of, error_responses, read_body, settings_of
from service.codec import HEADER_LENGTH, encode_v2_response, parse_v2_request
from service.errors import ModelNotReady, ServiceUnavailable
from contract.spec import INPUT_NAME, INPUT_SHAPE, LOGITS, PROBABILITIES

router = APIRouter(prefix="/v2", tags=["v2"])

ModelName = Annotated[str, Path(description="model name")]
Version = Annotated[str, Path(description="model version (an unknown one is a 404)")]

_TENSOR = {"type": "object", "required": ["name", "datatype", "shape"], "properties": {
    "name": {"type": "string", "enum": [INPUT_NAME]},
    "datatype": {"type": "string", "enum": ["FP32", "FP16", "FP64", "UINT8"]},
    "shape": {"type": "array", "items": {"type": "integer"}},
    "data": {"type": "array"},
    "parameters": {"type": "object"}}}
INFER_BODY = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": {"type": "object", "required": ["inputs"], "properties": {
        "id": {"type": "string"},
        "inputs": {"type": "array", "items": _TENSOR, "minItems": 1, "maxItems": 1},
        "outputs": {"type": "array", "items": {"type": "object", "required": ["name"], "properties": {
            "name": {"type": "string"}, "parameters": {"type": "object"}}}},
        "parameters": {"type": "object"}}},
        "example": {"id": "42", "inputs": [{"name": INPUT_NAME, "datatype": "UINT8", "shape": [1, 1, 28, 28],
                                             "data": [0] * 784}], "outputs": [{"name": PROBABILITIES}]}},
    "application/octet-stream": {"schema": {"type": "string", "format": "binary"},
                                 "description": f"JSON header, then raw tensors; header {HEADER_LENGTH} gives its length"}}}}


@router.get("", summary="Server metadata")
async def server_metadata(request: Request) -> JSONBody:
    extensions = ["binary_tensor_data"] + (["model_repository"] if settings_of(request).admin_allowed else [])
    return JSONBody({"name": "mnist-serve", "version": __version__, "extensions": extensions})


@router.get("/health/live", summary="Liveness")
async def live() -> Response:
    return Response(status_code=200)


@router.get("/health/ready", summary="Readiness: every model loaded and warmed", responses=error_responses(503))
async def ready(request: Request) -> Response:
    if not dataplane_of(request).ready:
        raise ServiceUnavailable("not ready", retry_after=2)
    return Response(status_code=200)


@router.get("/models/{name}", summary="Model metadata", responses=error_responses(404))
@router.get("/models/{name}/versions/{version}", summary="Model version metadata", responses=error_responses(404))
async def model_metadata(request: Request, name: ModelName, version: Version | None = None) -> JSONBody:
    plane = dataplane_of(request)
    model = plane.model(name, version)
    outputs = [{"name": out, "datatype": "FP32", "shape": [-1, 10]} for out in (LOGITS, PROBABILITIES)]
    outputs += [{"name": layer.name, "datatype": "FP32", "shape": [-1, *layer.shape]} for layer in model.layers]
    return JSONBody({
        "name": model.name, "versions": [str(v) for v in plane.registry.versions(name)], "platform": "onnxruntime_onnx",
        "inputs": [{"name": INPUT_NAME, "datatype": "FP32", "shape": [-1, *INPUT_SHAPE]}], "outputs": outputs,
        "parameters": {"framework": model.metadata.framework, "architecture": model.metadata.architecture,
                       "provider": model.runtime.provider, "version": str(model.version),
                       "max_batch_size": model.batcher.config.max_batch_size},
    })


@router.get("/models/{name}/ready", summary="Model readiness", responses=error_responses(404, 503))
@router.get("/models/{name}/versions/{version}/ready", summary="Model version readiness",
            responses=error_responses(404, 503))
async def model_ready(request: Request, name: ModelName, version: Version | None = None) -> Response:
    plane = dataplane_of(request)
    plane.model(name, version)
    if not plane.ready:
        raise ModelNotReady(f"model {name} is not ready", retry_after=2)
    return Response(status_code=200)


@router.post("/models/{name}/infer", summary="Inference (JSON or binary tensors)", openapi_extra=INFER_BODY,
             responses=error_responses(400, 404, 413, 503))
@router.post("/models/{name}/versions/{version}/infer", summary="Inference with a model version",
             openapi_extra=INFER_BODY, responses=error_responses(400, 404, 413, 503))
async def infer(request: Request, name: ModelName, version: Version | None = None) -> Response:
    return await run_infer(request, name, version)


async def run_infer(request: Request, name: str, version: str | None) -> Response:
    plane = dataplane_of(request)
    settings = settings_of(request)
    model = plane.model(name, version)
    parsed = parse_v2_request(
        await read_body(request), request.headers.get(HEADER_LENGTH), INPUT_NAME, INPUT_SHAPE, model.outputs,
        settings.max_images_per_request, settings.max_json_depth,
    )
    result = await plane.infer(model, parsed.batch, [output.name for output in parsed.outputs])
    body, headers = encode_v2_response(model.name, model.version, parsed.id, parsed.outputs, result.outputs)
    media = headers.pop("content-type")
    return Response(content=body, media_type=media, headers=headers)


async def _infer_endpoint(request: Request) -> Response:
    return await run_infer(request, request.path_params["name"], request.path_params.get("version"))


# The inference route is the hot path: served by plain Starlette routes placed ahead of FastAPI's,
# which skips FastAPI's per-request dependency solving (the path parameters are plain strings
# anyway). The FastAPI declarations above stay for the OpenAPI document and behave the same.
FAST_ROUTES = [
    HotRoute("/v2/models/{name}/infer", _infer_endpoint, methods=["POST"]),
    HotRoute("/v2/models/{name}/versions/{version}/infer", _infer_endpoint, methods=["POST"]),
]
