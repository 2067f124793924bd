"""Attribution maps, unit inspections and the frameworks' comparison -> V1 response bodies.
Every map carries its largest absolute value, so that a client draws it on a signed scale."""

from __future__ import annotations

from typing import Any

import numpy as np

from service.attribution import Attribution
from service.framework_diff import LayerComparison
from service.input_check import Framing, Measures
from service.inspection import Inspection

SIGNIFICANT_DIGITS = 4


def rounded(values: np.ndarray, digits: int = SIGNIFICANT_DIGITS) -> np.ndarray:
    """Values rounded to `digits` significant digits of the largest one (small ones lose their tail)."""
    array = np.asarray(values, dtype=np.float64)
    magnitude = float(np.max(np.abs(array))) if array.size else 0.0
    if magnitude == 0.0 or not np.isfinite(magnitude):
        return array.astype(np.float32)
    decimals = max(0, digits - 1 - int(np.floor(np.log10(magnitude))))
    return np.round(array, decimals).astype(np.float32)


def signed_map(values: np.ndarray) -> dict[str, Any]:
    return {"shape": list(values.shape), "max_abs": float(np.max(np.abs(values))) if values.size else 0.0,
            "values": rounded(values)}


def attribution(result: Attribution) -> dict[str, Any]:
    return {
        "value": result.objective_value,
        "maps": {
            "saliency": signed_map(result.saliency),
            "gradient_x_input": signed_map(result.gradient_x_input),
            "grad_cam": {"layer": result.gradcam_layer, **signed_map(result.gradcam),
                         "native": signed_map(result.gradcam_native)},
            "hires_cam": {"layer": result.gradcam_layer, **signed_map(result.hirescam),
                          "native": signed_map(result.hirescam_native)},
        },
    }


def inspection(found: Inspection, unit_values: np.ndarray) -> dict[str, Any]:
    """`unit_values`: the unit's feature map (spatial layers) or its layer's vector (dense)."""
    order = np.argsort(-np.abs(found.channel_contributions), kind="stable")
    top, left, bottom, right = found.field
    return {
        "unit": found.unit.describe(),
        "producer": found.producer.describe(),
        "value": found.value,
        "pre_activation": found.pre_activation,
        "bias": found.bias,
        "input_layer": found.input_layer,
        "values": {"min": float(unit_values.min()), "max": float(unit_values.max()), **signed_map(unit_values)},
        "kernels": signed_map(found.kernels),
        "contributions": [{"channel": int(channel), "value": float(found.channel_contributions[channel])}
                          for channel in order],
        "field": {"top": top, "left": left, "bottom": bottom, "right": right},
        "input_gradient": signed_map(found.input_gradient),
    }


def comparison_layer(layer: LayerComparison) -> dict[str, Any]:
    body: dict[str, Any] = {"name": layer.name, "kind": layer.kind, "stats": list(layer.stats),
                            "agreement": layer.agreement}
    if layer.pairs:
        body["pairs"] = [{"a": pair.a, "b": pair.b, "correlation": round(pair.correlation, 4)} for pair in layer.pairs]
        body["constant_channels"] = list(layer.constant)
    if layer.differences is not None:
        body["differences"] = [round(value, 5) for value in layer.differences]
    return body


def framing(found: Framing, ink: np.ndarray) -> dict[str, Any]:
    """The preprocessing steps: sizes, the ink (reduced), the crop box in the working image, the
    scaling, where the scaled digit was placed, its centre of mass and the shift to the centre."""
    height, width = found.working_shape
    body: dict[str, Any] = {
        "source": {"height": found.source_shape[0], "width": found.source_shape[1]},
        "working": {"height": height, "width": width}, "uneven_light": found.uneven_light,
        "ink": {"height": int(ink.shape[0]), "width": int(ink.shape[1]), "rows": np.round(ink, 2)},
        "crop": None, "input": np.round(found.input, 4),
    }
    if found.crop is not None:
        top, left, bottom, right = found.crop
        placed_top, placed_left, placed_height, placed_width = found.placed
        body.update({
            "crop": {"top": top, "left": left, "bottom": bottom, "right": right}, "scale": found.scale,
            "placed": {"top": placed_top, "left": placed_left, "height": placed_height, "width": placed_width},
            "centre_of_mass": {"y": found.centre_of_mass[0], "x": found.centre_of_mass[1]},
            "shift": {"dy": found.shift[0], "dx": found.shift[1]},
        })
    return body


def measures(found: Measures) -> dict[str, Any]:
    return {"ink": found.ink, "solid_share": found.solid_share, "pieces": found.pieces,
            "touches_every_border": found.touches_every_border, "top_probability": found.top_probability}
