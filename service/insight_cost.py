"""What the insight endpoints cost, priced from the model's layers and the query before the body is
read (service.admission): one image of compute per model, and an upper bound on the JSON answer,
counting every number at the longest orjson writes one (tests/service/test_insight_api.py checks
real answers against these prices)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from contract.spec import INPUT_SHAPE, NUM_CLASSES, LayerSpec
from service.admission import JSON_FLOAT_BYTES, Cost

SIDE = INPUT_SHAPE[-1]
PIXELS = SIDE * SIDE
FRAME_BYTES = 4096  # names, model, version, note, statistics and the JSON around the numbers
ENTRY_BYTES = 64  # one {"channel": 63, "value": ...} contribution, or one {"a", "b", "correlation"} pair
INK_SIDE = 56  # the input check's ink map, at most this many pixels a side


def _numbers(count: int, entries: int = 0) -> int:
    return FRAME_BYTES + count * JSON_FLOAT_BYTES + entries * ENTRY_BYTES


def _inputs(layers: Sequence[LayerSpec], position: int) -> tuple[int, int]:
    """(input values per unit, input channels or elements) of weighted layer `position`."""
    spec = layers[position]
    received = layers[position - 1].shape if position else INPUT_SHAPE
    if spec.kind == "conv":
        return received[0] * spec.kernel * spec.kernel, received[0]
    before = layers[position - 2].shape if position >= 2 and layers[position - 1].kind == "flatten" else received
    return math.prod(received), before[0]


def attribution(layers: Sequence[LayerSpec]) -> Cost:
    """Four 28x28 maps, the two CAMs at their own size, the input, probabilities and logits."""
    cam = max((math.prod(spec.shape[1:]) for spec in layers if len(spec.shape) == 3), default=PIXELS)
    return Cost(1, _numbers(5 * PIXELS + 2 * cam + 2 * NUM_CLASSES))


def inspect(layers: Sequence[LayerSpec]) -> Cost:
    """The unit's map (a channel, or a vector layer whole), the kernels of its source unit, one
    contribution per input channel, and the input gradient: the largest each can be in the model."""
    values = max(math.prod(spec.shape[1:]) if len(spec.shape) == 3 else spec.shape[0] for spec in layers)
    weighted = [_inputs(layers, position) for position, spec in enumerate(layers) if spec.kind in ("conv", "dense")]
    kernels = max(per_unit for per_unit, _ in weighted)
    channels = max(count for _, count in weighted)
    return Cost(1, _numbers(values + kernels + PIXELS, entries=channels))


def compare(layers: Sequence[LayerSpec]) -> Cost:
    """Two models: their probabilities, per layer both statistics and a pair per channel, the logit
    differences, three saliency maps."""
    pairs = sum(spec.shape[0] for spec in layers if len(spec.shape) == 3)
    values = 6 * NUM_CLASSES + len(layers) * 12 + 3 * PIXELS
    return Cost(2, _numbers(values, entries=pairs) + len(layers) * FRAME_BYTES // 8)


def input_check() -> Cost:
    """The reduced ink map, the 28x28 input and the probabilities."""
    return Cost(1, _numbers(INK_SIDE * INK_SIDE + PIXELS + NUM_CLASSES + 16))
