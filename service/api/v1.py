"""The V1 JSON API over HTTP: models, predict, activations, weights, explain. Each route is one
call into the data plane between reading the request and rendering the answer."""

from __future__ import annotations

from collections import Counter
from typing import Annotated, Any

import numpy as np
from fastapi import Path, Query, Request
from starlette.responses import Response

from contract.spec import PROBABILITIES
from service import admission, occlusion, offload
from service.api.bodies import read_images
from service.api.responses import JSONBody
from service.api.routing import FastRoute, model_routes, route
from service.dataplane import DataPlane
from service.errors import BadRequest
from service.protocol.v1 import render
from service.protocol.v1.images import to_batch
from service.protocol.v1.openapi import BATCH_BODY, SINGLE_BODY
from service.protocol.v1.options import ActivationsOptions, ExplainOptions, PredictOptions, WeightsOptions

TAGS = ["v1"]
INFER_ERRORS = (400, 404, 413, 415, 422, 503)
ModelName = Annotated[str | None, Path(description="model name, e.g. cnn-pytorch")]
Version = Annotated[str | None, Path(description="model version, e.g. 1 (an unknown one is a 404)")]


def dataplane_of(request: Request) -> DataPlane:
    return request.app.state.dataplane


async def list_models(request: Request) -> Response:
    plane = dataplane_of(request)
    return JSONBody({"default_model": plane.settings.default_model,
                     "models": [render.model(description) for description in plane.describe_latest()]})


async def get_model(request: Request, name: ModelName = None, version: Version = None) -> Response:
    plane = dataplane_of(request)
    return JSONBody(render.model(plane.describe(plane.resolve(name, version))))


async def predict(request: Request, options: Annotated[PredictOptions, Query()], name: ModelName = None,
                  version: Version = None) -> Response:
    plane = dataplane_of(request)
    model = plane.resolve(name, version)
    parsed = await read_images(request, options.preprocess, single=False)
    cost = admission.predict(len(parsed.images), options.include_input)
    result = await plane.infer(model, to_batch(parsed.images), (PROBABILITIES,), cost)
    body: dict[str, Any] = {"model": model.name, "version": model.version,
                            "predictions": render.predictions(result.outputs[PROBABILITIES], options.top_k)}
    if options.include_input:
        body["inputs"] = render.input_rows(parsed.images)
    return await offload.json_response(body, cost.response_bytes)


async def activations(request: Request, options: Annotated[ActivationsOptions, Query()], name: ModelName = None,
                      version: Version = None) -> Response:
    plane = dataplane_of(request)
    model = plane.resolve(name, version)
    names = [item.strip() for item in (options.layers or "").split(",") if item.strip()]
    repeated = [layer for layer, count in Counter(names).items() if count > 1]
    if repeated:
        raise BadRequest(f"layer {repeated[0]!r} is named more than once in 'layers'")
    specs = [model.layer(layer) for layer in names] if names else list(model.layers)
    cost = admission.activations(specs, options.encoding, options.dtype, options.bins, options.include_input)
    plane.admit(cost)
    parsed = await read_images(request, options.preprocess, single=True)
    result = await plane.infer(model, to_batch(parsed.images), (PROBABILITIES, *(spec.name for spec in specs)), cost)
    body: dict[str, Any] = {"model": model.name, "version": model.version,
                            "prediction": render.predictions(result.outputs[PROBABILITIES], options.top_k)[0],
                            "layers": await offload.run(render.layers, specs, result.outputs, options)}
    if options.include_input:
        body["input"] = render.input_rows(parsed.images[0])
    return await offload.json_response(body, cost.response_bytes)


async def weights(request: Request, options: Annotated[WeightsOptions, Query()],
                  layer: Annotated[str, Path(max_length=64, description="a conv or dense layer, e.g. conv1")],
                  name: ModelName = None, version: Version = None) -> Response:
    plane = dataplane_of(request)
    model = plane.resolve(name, version)
    spec, params = plane.layer_weights(model, layer)
    encoded = await offload.run(render.weights, spec, params, options)
    return JSONBody({"model": model.name, "version": model.version, **encoded})


async def explain(request: Request, options: Annotated[ExplainOptions, Query()], name: ModelName = None,
                  version: Version = None) -> Response:
    plane = dataplane_of(request)
    model = plane.resolve(name, version)
    plan = occlusion.make_plan(options.patch, options.stride, options.fill)
    cost = admission.explain(len(plan.positions), include_input=options.include_input)
    plane.admit(cost)
    parsed = await read_images(request, options.preprocess, single=True)
    image = parsed.images[0]
    result = await plane.infer(model, to_batch(occlusion.occluded_batch(image, plan)), (PROBABILITIES,), cost)
    probabilities = result.outputs[PROBABILITIES]
    predicted = int(np.argmax(probabilities[0]))
    chosen = predicted if options.target is None else options.target
    drops, heatmap = occlusion.sensitivity(probabilities, chosen, plan)
    body: dict[str, Any] = {
        "model": model.name, "version": model.version, "target": chosen, "predicted": predicted,
        "probability": float(probabilities[0, chosen]), "patch": plan.patch, "stride": plan.stride, "fill": plan.fill,
        "shape": list(drops.shape), "map": np.round(drops, 5), "heatmap": np.round(heatmap, 5),
    }
    if options.include_input:
        body["input"] = render.input_rows(image)
    return await offload.json_response(body, cost.response_bytes)


def routes() -> list[FastRoute]:
    return [
        route("/v1/models", list_models, methods=["GET"], summary="List the served models (latest version of each)",
              tags=TAGS),
        *model_routes("/v1", "", get_model, methods=["GET"], summary="Describe a model", tags=TAGS, errors=(404,)),
        *model_routes("/v1", "/predict", predict, methods=["POST"], summary="Classify digits", tags=TAGS,
                      errors=INFER_ERRORS, default_model=True, openapi_extra=BATCH_BODY),
        *model_routes("/v1", "/activations", activations, methods=["POST"], tags=TAGS, errors=INFER_ERRORS,
                      summary="Per-layer activations for one image", default_model=True, openapi_extra=SINGLE_BODY),
        *model_routes("/v1", "/layers/{layer}/weights", weights, methods=["GET"], tags=TAGS, errors=(404, 422),
                      summary="A conv or dense layer's weights and bias"),
        *model_routes("/v1", "/explain", explain, methods=["POST"], tags=TAGS, errors=INFER_ERRORS,
                      summary="Occlusion sensitivity: where the model looks", default_model=True,
                      openapi_extra=SINGLE_BODY),
    ]
