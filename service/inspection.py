"""One unit of a served model, for one input: its values, the kernels (or weights) that produced
it, its receptive field on the input, and what each channel of the layer that feeds it added to
it (weights x activations, exact: the contributions and the bias sum to the unit's value).

A unit is a channel of a spatial layer at one position (by default where that channel is largest),
or one element of a dense layer. A ReLU or pool unit is traced back to the conv unit that made it
(through the pool's winning position); a `flatten` element is the pool output it holds, found
with the model's flatten order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from contract.spec import LayerSpec
from service import layer_math
from service.attribution import INPUT, Trace, backward


class UnitError(ValueError):
    """A position that the layer's maps do not have, or a position for a layer that has none."""


class NoSuchUnit(LookupError):
    """A channel or element that the layer does not have."""


@dataclass(frozen=True)
class Unit:
    layer: LayerSpec
    index: int  # a spatial layer's channel, or a vector layer's element
    y: int | None = None
    x: int | None = None

    @property
    def spatial(self) -> bool:
        return self.y is not None

    def describe(self) -> dict[str, Any]:
        where = {"y": self.y, "x": self.x} if self.spatial else {}
        return {"layer": self.layer.name, "kind": self.layer.kind, ("channel" if self.spatial else "unit"): self.index,
                **where}


def select(trace: Trace, layer: str, index: int, y: int | None = None, x: int | None = None) -> Unit:
    """The unit a request names; (y, x) defaults to the channel's largest value."""
    spec = trace.layers[trace.index(layer)]
    if len(spec.shape) == 3:
        channels, height, width = spec.shape
        if not 0 <= index < channels:
            raise NoSuchUnit(f"layer {layer!r} has channels 0-{channels - 1}, not {index}")
        if (y is None) != (x is None):
            raise UnitError("give both y and x, or neither")
        if y is None or x is None:
            flat = int(np.argmax(trace.outputs[layer][index]))
            y, x = flat // width, flat % width
        if not (0 <= y < height and 0 <= x < width):
            raise UnitError(f"layer {layer!r} is {height}x{width}; ({y}, {x}) is outside it")
        return Unit(spec, index, y, x)
    if not 0 <= index < spec.shape[0]:
        raise NoSuchUnit(f"layer {layer!r} has units 0-{spec.shape[0] - 1}, not {index}")
    if y is not None or x is not None:
        raise UnitError(f"layer {layer!r} is a vector: its units have no position")
    return Unit(spec, index)


def flatten_position(order: str, shape: tuple[int, ...], index: int) -> tuple[int, int, int]:
    """(channel, y, x) of element `index` of a flattened [C, H, W] map, in the model's flatten order."""
    channels, height, width = shape
    if order == "CHW":
        return index // (height * width), (index // width) % height, index % width
    return index % channels, index // (width * channels), (index // channels) % width


def source(trace: Trace, unit: Unit) -> Unit:
    """The conv or dense unit whose output `unit` is (through ReLUs, the pool's winner, flatten)."""
    position = trace.index(unit.layer.name)
    current = unit
    while current.layer.kind not in ("conv", "dense"):
        feeding = trace.layers[position - 1]
        if current.layer.kind == "flatten":
            current = Unit(feeding, *flatten_position(trace.flatten_order, feeding.shape, current.index))
        elif current.layer.kind == "pool" and current.y is not None and current.x is not None:
            size = current.layer.kernel
            top, left = current.y * size, current.x * size
            window = trace.outputs[feeding.name][current.index, top : top + size, left : left + size]
            winner = int(np.argmax(window))
            current = Unit(feeding, current.index, top + winner // size, left + winner % size)
        else:
            current = Unit(feeding, current.index, current.y, current.x)
        position -= 1
    return current


def contributions(trace: Trace, unit: Unit) -> tuple[np.ndarray, np.ndarray]:
    """What each channel (or element) of the producing layer's input adds to a conv or dense unit:
    (per input channel [Cin], per input value: [Cin, kh, kw] for conv, [F] for dense)."""
    position = trace.index(unit.layer.name)
    received = trace.input_of(position)
    weight = trace.weights[unit.layer.name]["weight"]
    if unit.layer.kind == "conv":
        assert unit.y is not None and unit.x is not None
        padding = layer_math.conv_padding(unit.layer)
        padded = np.pad(received, ((0, 0), (padding, padding), (padding, padding)))
        size = unit.layer.kernel
        window = padded[:, unit.y : unit.y + size, unit.x : unit.x + size]
        each = weight[unit.index] * window
        return each.sum(axis=(1, 2)), each
    each = weight[unit.index] * received
    feeding = trace.layers[position - 1]
    if feeding.kind == "flatten":  # group fc1's inputs by the channel of the map they were flattened from
        source_shape = trace.layers[position - 2].shape
        return layer_math.unflatten(each, source_shape, trace.flatten_order).sum(axis=(1, 2)), each
    return each, each


def input_gradient(trace: Trace, unit: Unit) -> np.ndarray:
    """d(unit's pre-activation)/d(input pixels): the unit's effective receptive field."""
    shape = trace.outputs[unit.layer.name].shape
    seed = np.zeros(shape, np.float32)
    if unit.spatial:
        seed[unit.index, unit.y, unit.x] = 1.0
    else:
        seed[unit.index] = 1.0
    return backward(trace, unit.layer.name, seed)[INPUT]


def field_box(trace: Trace, unit: Unit) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) of the input pixels the unit can see; a dense unit sees them all."""
    side = trace.image.shape[0]
    if not unit.spatial or unit.y is None or unit.x is None:
        return 0, 0, side - 1, side - 1
    return layer_math.receptive_fields(trace.layers)[unit.layer.name].box(unit.y, unit.x, side)


def value(trace: Trace, unit: Unit) -> float:
    values = trace.outputs[unit.layer.name]
    return float(values[unit.index, unit.y, unit.x] if unit.spatial else values[unit.index])


@dataclass(frozen=True)
class Inspection:
    unit: Unit
    producer: Unit
    value: float
    pre_activation: float
    bias: float
    channel_contributions: np.ndarray
    value_contributions: np.ndarray
    kernels: np.ndarray  # conv: [Cin, kh, kw]; dense: the unit's weights, [C, H, W] after flatten, else [F]
    input_layer: str  # what feeds the producer: a layer's name, or "input"
    field: tuple[int, int, int, int]
    input_gradient: np.ndarray


def inspect(trace: Trace, unit: Unit) -> Inspection:
    producer = source(trace, unit)
    position = trace.index(producer.layer.name)
    per_channel, per_value = contributions(trace, producer)
    weight = trace.weights[producer.layer.name]["weight"][producer.index]
    feeding = trace.layers[position - 1].name if position else INPUT
    if producer.layer.kind == "dense" and trace.layers[position - 1].kind == "flatten":
        weight = layer_math.unflatten(weight, trace.layers[position - 2].shape, trace.flatten_order)
        feeding = trace.layers[position - 2].name  # fc1's inputs, grouped by the channel they came from
    located = unit
    if unit.layer.kind == "flatten":
        flattened = trace.layers[trace.index(unit.layer.name) - 1]
        located = Unit(flattened, *flatten_position(trace.flatten_order, flattened.shape, unit.index))
    return Inspection(
        unit=unit, producer=producer, value=value(trace, unit), pre_activation=value(trace, producer),
        bias=float(trace.weights[producer.layer.name]["bias"][producer.index]),
        channel_contributions=per_channel, value_contributions=per_value, kernels=weight,
        input_layer=feeding, field=field_box(trace, located), input_gradient=input_gradient(trace, producer),
    )
