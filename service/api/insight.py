"""What the page asks beyond the V1 basics: gradient attribution, a unit's inspection, the two
frameworks compared. Each runs one inference per model through the data plane (every layer's
output at once), then computes from those outputs and the served weights (service.attribution,
service.inspection, service.framework_diff)."""

from __future__ import annotations

import asyncio
import base64
import binascii
from typing import Annotated, Any

import numpy as np
from fastapi import Query, Request
from starlette.responses import Response

from contract.spec import LOGITS, PROBABILITIES, WEIGHTED_KINDS
from service import attribution, framework_diff, input_check, insight_cost, inspection
from service.admission import Cost
from service.api.bodies import input_limits, media_type, read_body, read_images, settings_of
from service.api.responses import JSONBody
from service.api.routing import FastRoute, model_routes, route
from service.api.v1 import INFER_ERRORS, ModelName, Version, dataplane_of
from service.attribution import Trace
from service.dataplane import DataPlane
from service.errors import NotFound, PayloadTooLarge, Unprocessable, UnsupportedMediaType
from service.jsonio import parse_json
from service.preprocess import SIZE, WORKING_SIDE, decode_image, probe_image, to_gray
from service.protocol.v1 import insight_render, render
from service.protocol.v1.images import array_to_image, to_batch
from service.protocol.v1.insight_options import AttributionOptions, CompareOptions, InputCheckOptions, InspectOptions
from service.protocol.v1.openapi import SINGLE_BODY
from service.registry import ModelVersion

TAGS = ["v1 insight"]


def quantized(metadata: Any) -> bool:
    """An int8 model (its metadata names how it was quantized)."""
    return bool(getattr(metadata, "quantization", None))


def approximation_note(model: ModelVersion) -> str | None:
    return attribution.QUANTIZED_NOTE if quantized(model.metadata) else None


def every_output(model: ModelVersion) -> tuple[str, ...]:
    return (LOGITS, PROBABILITIES, *(spec.name for spec in model.layers))


async def trace(plane: DataPlane, model: ModelVersion, image: np.ndarray, cost: Cost) -> Trace:
    """One inference with every layer's output, priced by the answer it is for (service.insight_cost)."""
    result = await plane.infer(model, to_batch(image[None]), every_output(model), cost)
    weights = {spec.name: plane.layer_weights(model, spec.name)[1] for spec in model.layers if spec.kind in WEIGHTED_KINDS}
    return Trace.from_batch(model.layers, image, result.outputs, weights, model.metadata.flatten_order)


def model_fields(model: ModelVersion) -> dict[str, Any]:
    return {"model": model.name, "version": model.version, "exact": not quantized(model.metadata),
            "note": approximation_note(model)}


async def attribute(request: Request, options: Annotated[AttributionOptions, Query()], name: ModelName = None,
                    version: Version = None) -> Response:
    plane = dataplane_of(request)
    model = plane.resolve(name, version)
    cost = insight_cost.attribution(model.layers)
    plane.admit(cost)
    image = (await read_images(request, options.preprocess, single=True)).images[0]
    traced = await trace(plane, model, image, cost)
    predicted = int(np.argmax(traced.probabilities))
    target = predicted if options.target is None else options.target
    versus = None if options.versus == target else options.versus  # "why 3 and not 3" is "why 3"
    result = await asyncio.to_thread(attribution.attribute, traced, options.objective, target, versus)
    body: dict[str, Any] = {
        **model_fields(model), "target": target, "versus": versus, "objective": options.objective,
        "predicted": predicted, "probabilities": traced.probabilities, "logits": traced.logits,
        **insight_render.attribution(result),
    }
    if options.include_input:
        body["input"] = render.input_rows(image)
    return JSONBody(body)


async def inspect_unit(request: Request, options: Annotated[InspectOptions, Query()], name: ModelName = None,
                       version: Version = None) -> Response:
    plane = dataplane_of(request)
    model = plane.resolve(name, version)
    layer = model.layer(options.layer).name if options.layer else model.layers[0].name  # 404 for an unknown layer
    cost = insight_cost.inspect(model.layers)
    plane.admit(cost)
    image = (await read_images(request, options.preprocess, single=True)).images[0]
    traced = await trace(plane, model, image, cost)
    try:
        unit = inspection.select(traced, layer, options.unit, *options.position)
    except inspection.NoSuchUnit as exc:
        raise NotFound(str(exc)) from None
    except inspection.UnitError as exc:
        raise Unprocessable(str(exc)) from None
    found = await asyncio.to_thread(inspection.inspect, traced, unit)
    layer_values = traced.outputs[layer]
    unit_values = layer_values[unit.index] if unit.spatial else layer_values
    return JSONBody({**model_fields(model), "predicted": int(np.argmax(traced.probabilities)),
                     **insight_render.inspection(found, unit_values)})


def _default_pair(plane: DataPlane) -> str:
    """The default model and the model of the other framework with its architecture."""
    first = plane.resolve()
    meta = first.metadata
    for description in plane.describe_latest():
        other = description.metadata
        if (description.name != first.name and other.architecture == meta.architecture
                and other.framework != meta.framework and quantized(other) == quantized(meta)):
            return f"{first.name},{description.name}"
    raise NotFound(f"no model of the {meta.architecture} architecture from another framework than {meta.framework} "
                   f"is served to compare {first.name} with")


def _named_models(plane: DataPlane, listed: str | None) -> list[ModelVersion]:
    listed = listed or _default_pair(plane)
    names = [item.strip() for item in listed.split(",") if item.strip()]
    if len(names) != 2 or names[0] == names[1]:
        raise Unprocessable(f"models: name two different models, comma-separated (got {len(names)}: {listed!r})")
    models = []
    for item in names:
        model_name, _, version = item.partition(":")
        models.append(plane.resolve(model_name, version or None))
    architectures = {model.metadata.architecture for model in models}
    if len(architectures) != 1:
        raise Unprocessable(f"models: {models[0].name} and {models[1].name} have different architectures "
                            f"({', '.join(sorted(architectures))}); their layers cannot be compared")
    return models


async def compare(request: Request, options: Annotated[CompareOptions, Query()]) -> Response:
    plane = dataplane_of(request)
    models = _named_models(plane, options.models)
    cost = insight_cost.compare(models[0].layers)
    plane.admit(cost)
    image = (await read_images(request, options.preprocess, single=True)).images[0]
    each = Cost(1, cost.response_bytes // 2)
    first, second = await asyncio.gather(*(trace(plane, model, image, each) for model in models))
    target = int(np.argmax(first.probabilities)) if options.target is None else options.target
    return JSONBody(await asyncio.to_thread(_comparison, models, first, second, target))


def _comparison(models: list[ModelVersion], first: Trace, second: Trace, target: int) -> dict[str, Any]:
    maps = [attribution.attribute(traced, "logit", target).saliency for traced in (first, second)]
    return {
        "models": [{**model_fields(model), "framework": model.metadata.framework,
                    "flatten_order": model.metadata.flatten_order, "predicted": int(np.argmax(traced.probabilities)),
                    "probabilities": traced.probabilities} for model, traced in zip(models, (first, second))],
        "probabilities": framework_diff.probability_difference(first, second),
        "layers": [insight_render.comparison_layer(layer) for layer in framework_diff.compare_layers(first, second)],
        "saliency": {"target": target, "maps": [insight_render.signed_map(values) for values in maps],
                     "difference": insight_render.signed_map(maps[0] - maps[1]),
                     "correlation": float(np.corrcoef(maps[0].ravel(), maps[1].ravel())[0, 1])},
    }


async def read_gray(request: Request, preprocess: bool | None) -> tuple[np.ndarray, bool]:
    """The one image of a JSON body ({"image_base64"} or {"image"}), as gray [H, W] before
    preprocessing; and whether it is to be preprocessed (by default: files yes, arrays no)."""
    if media_type(request) != "application/json":
        raise UnsupportedMediaType("the input check takes a JSON body: {\"image_base64\": ...} or {\"image\": [[...]]}")
    settings = settings_of(request)
    limits = input_limits(settings)
    body = parse_json(await read_body(request), settings.max_json_depth)
    present = [key for key in ("image", "image_base64") if isinstance(body, dict) and key in body]
    if len(present) != 1 or len(body) != 1:
        raise Unprocessable("send exactly one of 'image' or 'image_base64', and nothing else")
    if present[0] == "image":
        return array_to_image(body["image"], "image"), bool(preprocess)
    data = _base64_file(body["image_base64"], limits.max_encoded_bytes)
    apply = preprocess is None or preprocess
    probe_image(data, "image_base64", limits.max_pixels)
    image = await asyncio.to_thread(decode_image, data, limits.max_pixels, "image_base64",
                                    WORKING_SIDE if apply else None, None if apply else SIZE)
    return to_gray(image), apply


def _base64_file(value: Any, max_bytes: int) -> bytes:
    """image_base64 (or a data URL) -> the file's bytes, within max_encoded_image_bytes."""
    if not isinstance(value, str):
        raise Unprocessable("image_base64 must be a base64 string of an image file")
    encoded = value.partition(",")[2] if value.startswith("data:") else value
    if len(encoded) * 3 // 4 > max_bytes:
        raise PayloadTooLarge(f"image_base64: encoded image exceeds the max_encoded_image_bytes limit of {max_bytes}")
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise Unprocessable(f"image_base64: not valid base64 ({exc})") from exc


async def check_input(request: Request, options: Annotated[InputCheckOptions, Query()], name: ModelName = None,
                      version: Version = None) -> Response:
    plane = dataplane_of(request)
    model = plane.resolve(name, version)
    cost = insight_cost.input_check()
    plane.admit(cost)
    gray, apply = await read_gray(request, options.preprocess)
    framing = await asyncio.to_thread(input_check.frame, gray) if apply else input_check.unprocessed(gray)
    result = await plane.infer(model, to_batch(framing.input[None]), (PROBABILITIES,), cost)
    probabilities = result.outputs[PROBABILITIES][0]
    measures = input_check.measure(framing, probabilities)
    return JSONBody({
        "model": model.name, "version": model.version, "preprocessed": apply,
        "predicted": int(np.argmax(probabilities)), "probabilities": probabilities,
        **insight_render.framing(framing, input_check.thumbnail(framing.ink, insight_cost.INK_SIDE)),
        "measures": insight_render.measures(measures),
        "warnings": [{"code": found.code, "message": found.message} for found in input_check.warnings(measures)],
    })


def routes() -> list[FastRoute]:
    return [
        *model_routes("/v1", "/attribution", attribute, methods=["POST"], tags=TAGS, errors=INFER_ERRORS,
                      summary="Gradient attribution of one class (saliency, gradient x input, Grad-CAM)",
                      openapi_extra=SINGLE_BODY),
        *model_routes("/v1", "/inspect", inspect_unit, methods=["POST"], tags=TAGS, errors=INFER_ERRORS,
                      summary="One unit: its values, kernels, receptive field and contributing channels",
                      openapi_extra=SINGLE_BODY),
        *model_routes("/v1", "/input-check", check_input, methods=["POST"], tags=TAGS, errors=INFER_ERRORS,
                      summary="What preprocessing did to one image, and warnings when it is blank or unlike a digit",
                      openapi_extra=SINGLE_BODY),
        route("/v1/compare", compare, methods=["POST"], tags=TAGS, errors=INFER_ERRORS,
              summary="Two models of one architecture on one input: layers matched, probabilities and saliency",
              openapi_extra=SINGLE_BODY),
    ]
