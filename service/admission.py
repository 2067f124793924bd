"""What a request costs, priced before any work: images of model compute and bytes of response.

Every inference is priced (V1 routes from their query before the body is read, V2 from its
decoded header, anything else from its batch and outputs as raw float32), checked against the
per-request limits (413 naming the limit and its value), and holds its response bytes in the
server's budget until it ends (503 while the budget is spent). The images are admitted by each
model's batcher against its queue (service.batching). The response estimates are upper bounds:
the JSON figures are the longest a value can be written (tests/service/test_resource_cost.py
checks them against real responses).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from contract.spec import LOGITS, NUM_CLASSES, PROBABILITIES, LayerSpec
from service import inflight
from service.config import Settings
from service.errors import Overloaded, PayloadTooLarge

# The longest orjson writes a float32 ("-1.2345679e-38"), with its comma.
JSON_FLOAT_BYTES = 16
# V1 rounds layer values to 5 significant digits ("-0.0012346"), the input to 4 decimals ("0.1234").
ROUNDED_FLOAT_BYTES = 12
INPUT_VALUE_BYTES = 8
RAW_FLOAT_BYTES = 4
# A prediction without its inputs: label, confidence, ten probabilities, the top k (at most 10).
PREDICTION_BYTES = 1024
# Per layer, around the data: name, kind, shape, statistics without the histogram.
LAYER_OVERHEAD_BYTES = 512
HISTOGRAM_BIN_BYTES = 2 * JSON_FLOAT_BYTES
OUTPUT_HEADER_BYTES = 256  # a V2 output's name, datatype, shape and parameters
PNG_CHANNEL_OVERHEAD_BYTES = 128  # signature, IHDR, IDAT and IEND chunks, zlib framing, base64 quotes
SIDE = 28


@dataclass(frozen=True)
class Cost:
    images: int  # images the model computes
    response_bytes: int  # the response's size, at most


def output_elements(layers: Iterable[LayerSpec], name: str) -> int:
    """Values per image of one model output (a layer's activation, or the ten logits/probabilities)."""
    if name in (LOGITS, PROBABILITIES):
        return NUM_CLASSES
    for spec in layers:
        if spec.name == name:
            return math.prod(spec.shape)
    return NUM_CLASSES  # an unknown name is refused before it is computed


def raw_outputs(layers: Iterable[LayerSpec], images: int, outputs: Sequence[str]) -> Cost:
    """The least a result costs: its outputs as raw float32 (what an endpoint that does not price
    itself is charged)."""
    specs = tuple(layers)
    return Cost(images, images * RAW_FLOAT_BYTES * sum(output_elements(specs, name) for name in outputs))


def v2(layers: Iterable[LayerSpec], images: int, outputs: Iterable[tuple[str, bool]], request_id: str = "") -> Cost:
    """A V2 response: each (output, binary) as raw float32 bytes or as JSON numbers, each with its
    description; the request's id is echoed (JSON escapes take up to 6 bytes a character)."""
    specs = tuple(layers)
    requested = list(outputs)
    per_image = sum(output_elements(specs, name) * (RAW_FLOAT_BYTES if binary else JSON_FLOAT_BYTES)
                    for name, binary in requested)
    return Cost(images, 1024 + OUTPUT_HEADER_BYTES * len(requested) + 6 * len(request_id) + images * per_image)


def predict(images: int, include_input: bool) -> Cost:
    per_image = PREDICTION_BYTES + (SIDE * SIDE * INPUT_VALUE_BYTES if include_input else 0)
    return Cost(images, 256 + images * per_image)


def encoded_layer_bytes(shape: Sequence[int], encoding: str, dtype: str) -> int:
    elements = math.prod(shape)
    if encoding == "json":
        return elements * ROUNDED_FLOAT_BYTES
    if encoding == "base64":
        return math.ceil(elements * (2 if dtype == "float16" else 4) / 3) * 4 + 128
    channels = math.prod(shape[:-2]) if len(shape) > 2 else 1
    rows = shape[-2] if len(shape) > 1 else 1
    raw = elements + rows * channels  # one filter byte per row; zlib level 1 never grows data by more than 1%
    return math.ceil(raw * 1.01 / 3) * 4 + channels * PNG_CHANNEL_OVERHEAD_BYTES


def activations(specs: Sequence[LayerSpec], encoding: str, dtype: str, bins: int, include_input: bool) -> Cost:
    """One image; every layer's data in its encoding, with statistics and a histogram of `bins`."""
    layer_bytes = sum(encoded_layer_bytes(spec.shape, encoding, dtype) + LAYER_OVERHEAD_BYTES
                      + bins * HISTOGRAM_BIN_BYTES for spec in specs)
    return Cost(1, PREDICTION_BYTES + layer_bytes + (SIDE * SIDE * INPUT_VALUE_BYTES if include_input else 0))


def explain(positions_per_side: int, targets: int = 1, include_input: bool = True, passes: int = 1) -> Cost:
    """Occlusion: the image and one occluded copy per patch position, run `passes` times (once
    gives every class's probability, so any number of targets); the response has a map
    (positions) and a 28x28 heatmap per target. An attribution that runs once per target passes
    `passes=targets`."""
    positions = positions_per_side * positions_per_side
    values = targets * (positions + SIDE * SIDE) + (SIDE * SIDE if include_input else 0)
    return Cost((1 + positions) * passes, 1024 + values * JSON_FLOAT_BYTES)


class Admission:
    """The per-request limits and the server's response budget."""

    def __init__(self, settings: Settings) -> None:
        self.max_compute_images = settings.max_compute_images
        self.max_response_bytes = settings.max_response_bytes
        self.max_pending_response_bytes = settings.max_pending_response_bytes
        self.pending_response_bytes = 0

    def check(self, cost: Cost) -> None:
        """413 when one request costs more than a single request may."""
        if cost.images > self.max_compute_images:
            raise PayloadTooLarge(f"this request needs {cost.images} images of compute, over the max_compute_images "
                                  f"limit of {self.max_compute_images}")
        if cost.response_bytes > self.max_response_bytes:
            raise PayloadTooLarge(f"this request's response would be up to {cost.response_bytes} bytes, over the "
                                  f"max_response_bytes limit of {self.max_response_bytes}; ask for fewer images "
                                  "or outputs, or for binary outputs")

    def hold_response(self, cost: Cost) -> bool:
        """Reserve the response's bytes until the current request ends (True), or until the caller
        gives them back with `give_back` when there is no request scope (False). 503 while other
        requests hold the budget; a lone request is always admitted."""
        pending = self.pending_response_bytes
        if pending and pending + cost.response_bytes > self.max_pending_response_bytes:
            raise Overloaded(f"responses of {pending} bytes are being prepared, the max_pending_response_bytes "
                             f"limit is {self.max_pending_response_bytes}; retry later")
        self.pending_response_bytes = pending + cost.response_bytes
        return inflight.hold(lambda: self.give_back(cost))

    def give_back(self, cost: Cost) -> None:
        self.pending_response_bytes -= cost.response_bytes
