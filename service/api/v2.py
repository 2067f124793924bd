"""The Open Inference Protocol (KServe V2) over HTTP, with Triton's binary tensor data extension.
Bodies are decoded by service.protocol.v2; inference runs through the shared data plane."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Request
from starlette.responses import Response

from contract.spec import INPUT_NAME, PROBABILITIES
from service import admission, offload
from service.api.bodies import read_v2_request, settings_of
from service.api.responses import JSONBody
from service.api.routing import FastRoute, model_routes, route
from service.dataplane import DataPlane
from service.errors import ModelNotReady, ServiceUnavailable
from service.protocol.v2 import metadata, model_io
from service.protocol.v2.datatypes import datatype_names
from service.protocol.v2.rest import HEADER_LENGTH, encode_response

TAGS = ["v2"]
ModelName = Annotated[str, Path(description="model name")]
Version = Annotated[str | None, Path(description="model version (an unknown one is a 404)")]

_TENSOR = {"type": "object", "required": ["name", "datatype", "shape"], "properties": {
    "name": {"type": "string", "enum": [INPUT_NAME]},
    "datatype": {"type": "string", "enum": datatype_names()},
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


def dataplane_of(request: Request) -> DataPlane:
    return request.app.state.dataplane


async def server_metadata(request: Request) -> Response:
    return JSONBody(metadata.server(settings_of(request)))


async def live(request: Request) -> Response:
    return Response(status_code=200)


async def ready(request: Request) -> Response:
    if not dataplane_of(request).ready:
        raise ServiceUnavailable("not ready", retry_after=2)
    return Response(status_code=200)


async def model_metadata(request: Request, name: ModelName, version: Version = None) -> Response:
    plane = dataplane_of(request)
    return JSONBody(metadata.model(plane.describe(plane.resolve(name, version))))


async def model_config(request: Request, name: ModelName, version: Version = None) -> Response:
    plane = dataplane_of(request)
    return JSONBody(metadata.model_config(plane.describe(plane.resolve(name, version)), settings_of(request)))


async def model_ready(request: Request, name: ModelName, version: Version = None) -> Response:
    plane = dataplane_of(request)
    plane.resolve(name, version)
    if not plane.ready:
        raise ModelNotReady(f"model {name} is not ready", retry_after=2)
    return Response(status_code=200)


async def infer(request: Request, name: ModelName, version: Version = None) -> Response:
    plane = dataplane_of(request)
    model = plane.resolve(name, version)
    inference = await read_v2_request(request)
    outputs = model_io.requested_outputs(inference, model.outputs)
    batch = model_io.request_batch(inference)
    cost = admission.v2(model.layers, len(batch), [(out.name, out.binary) for out in outputs], inference.id or "")
    result = await plane.infer(model, batch, [output.name for output in outputs], cost)
    response = model_io.response(model.name, model.version, inference, outputs, result.outputs)
    body, headers = await offload.call(encode_response, response, offload.json_encoder(cost.response_bytes),
                                       size=cost.response_bytes)
    return Response(content=body, media_type=headers.pop("content-type"), headers=headers)


def routes() -> list[FastRoute]:
    return [
        route("/v2", server_metadata, methods=["GET"], summary="Server metadata", tags=TAGS),
        route("/v2/health/live", live, methods=["GET"], summary="Liveness", tags=TAGS),
        route("/v2/health/ready", ready, methods=["GET"], summary="Readiness: every model loaded and warmed",
              tags=TAGS, errors=(503,)),
        *model_routes("/v2", "", model_metadata, methods=["GET"], summary="Model metadata", tags=TAGS, errors=(404,)),
        *model_routes("/v2", "/config", model_config, methods=["GET"], summary="Model configuration (Triton's)",
                      tags=TAGS, errors=(404,)),
        *model_routes("/v2", "/ready", model_ready, methods=["GET"], summary="Model readiness", tags=TAGS,
                      errors=(404, 503)),
        *model_routes("/v2", "/infer", infer, methods=["POST"], summary="Inference (JSON or binary tensors)", tags=TAGS,
                      errors=(400, 404, 413, 500, 503), openapi_extra=INFER_BODY),
    ]
