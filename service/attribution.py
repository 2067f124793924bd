"""Gradient attribution computed exactly from a served model's layers: backpropagation in numpy
through conv, ReLU, max pool, flatten (in the model's flatten order) and dense, with the served
weights and the layer outputs of one inference through ONNX Runtime.

A network of these layers is piecewise linear up to its logits, so at an input where no ReLU sits
exactly at 0 and no pooling window holds a tie, the gradient below is the model's own derivative
(tests/service/test_attribution.py checks it against finite differences of the ONNX model).
Int8 models are run on 8-bit activations: their function is a staircase whose derivative is 0
almost everywhere; what is computed for them is the gradient of the float network with their
dequantized weights, along the path (ReLU and pool choices) the int8 model took: an approximation.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np

from contract.spec import LOGITS, MNIST_STD, NUM_CLASSES, PROBABILITIES, LayerSpec
from service import layer_math

INPUT = "input"
Objective = Literal["logit", "probability"]
QUANTIZED_NOTE = ("This is an int8 model: its activations are 8-bit, so its output is a staircase of the input. "
                  "The maps are the gradient of the float network with its dequantized weights, along the path its "
                  "int8 activations took: an approximation.")


@dataclass(frozen=True)
class Trace:
    """One image's pass through a served model: each layer's output as ONNX Runtime computed it
    (no batch axis), the logits and probabilities, and the weights the model serves."""

    layers: tuple[LayerSpec, ...]
    image: np.ndarray  # [28, 28] in [0, 1], as the model saw it
    outputs: Mapping[str, np.ndarray]
    weights: Mapping[str, Mapping[str, np.ndarray]]
    flatten_order: str

    def __post_init__(self) -> None:
        layer_math.check_flatten_order(self.flatten_order)

    @classmethod
    def from_batch(cls, layers: tuple[LayerSpec, ...], image: np.ndarray, outputs: Mapping[str, np.ndarray],
                   weights: Mapping[str, Mapping[str, np.ndarray]], flatten_order: str) -> "Trace":
        """From a batch result of one image (every layer, logits and probabilities requested)."""
        first = {name: np.asarray(values[0], dtype=np.float32) for name, values in outputs.items()}
        return cls(layers, np.asarray(image, dtype=np.float32), first, weights, flatten_order)

    def index(self, name: str) -> int:
        for position, spec in enumerate(self.layers):
            if spec.name == name:
                return position
        raise KeyError(name)

    def input_of(self, position: int) -> np.ndarray:
        """What layer `position` received: the normalised image for the first, else the previous output."""
        return layer_math.normalize(self.image) if position == 0 else self.outputs[self.layers[position - 1].name]

    @property
    def logits(self) -> np.ndarray:
        return self.outputs[LOGITS] if LOGITS in self.outputs else self.outputs[self.layers[-1].name]

    @property
    def probabilities(self) -> np.ndarray:
        return self.outputs[PROBABILITIES]


def backward(trace: Trace, start: str, gradient: np.ndarray) -> dict[str, np.ndarray]:
    """d(objective)/d(every output from `start` down), given d(objective)/d(start's output);
    `INPUT` holds the gradient with respect to the [28, 28] image in [0, 1]."""
    gradients = {start: np.asarray(gradient, dtype=np.float32)}
    current = gradients[start]
    for position in range(trace.index(start), -1, -1):
        spec = trace.layers[position]
        received = trace.input_of(position)
        if spec.kind == "dense":
            current = trace.weights[spec.name]["weight"].T @ current
        elif spec.kind == "relu":
            current = current * (received > 0)
        elif spec.kind == "flatten":
            current = layer_math.unflatten(current, received.shape, trace.flatten_order)
        elif spec.kind == "pool":
            current = layer_math.maxpool_input_gradient(current, received, spec.kernel)
        elif spec.kind == "conv":
            current = layer_math.conv_input_gradient(current, trace.weights[spec.name]["weight"],
                                                     layer_math.conv_padding(spec), received.shape)
        else:
            raise ValueError(f"layer {spec.name!r} has an unknown kind {spec.kind!r}")
        gradients[trace.layers[position - 1].name if position else INPUT] = current
    gradients[INPUT] = gradients[INPUT][0] / MNIST_STD  # through (x - mean) / std
    return gradients


def logit_gradient(trace: Trace, objective: Objective, target: int, versus: int | None) -> np.ndarray:
    """d(objective)/d(logits): objective is the target's logit or probability, minus the `versus`
    class's when one is given ("why 9 and not 4": the difference of their logits is log(p9 / p4))."""
    def one(digit: int) -> np.ndarray:
        if objective == "logit":
            return np.eye(NUM_CLASSES)[digit]
        probabilities = trace.probabilities
        return probabilities[digit] * (np.eye(NUM_CLASSES)[digit] - probabilities)

    return one(target) - (one(versus) if versus is not None else 0.0)


def objective_value(trace: Trace, objective: Objective, target: int, versus: int | None) -> float:
    values = trace.logits if objective == "logit" else trace.probabilities
    return float(values[target] - (values[versus] if versus is not None else 0.0))


def gradcam_layer(layers: tuple[LayerSpec, ...]) -> LayerSpec:
    """The rectified output of the last conv layer (Grad-CAM's choice): the ReLU right after it.

    Grad-CAM weighs each channel by its gradient averaged over positions, which suits networks
    that average their last maps (global pooling); these flatten them into a dense layer, where the
    gradient changes sign from position to position and Grad-CAM can point away from the evidence.
    HiResCAM (Draelos & Carin, 2020) keeps the gradient position by position: summed over the
    map, it is the part of the score that is linear in this layer's output."""
    last_conv = max(position for position, spec in enumerate(layers) if spec.kind == "conv")
    following = layers[last_conv + 1] if last_conv + 1 < len(layers) else None
    return following if following is not None and following.kind == "relu" else layers[last_conv]


def to_input_grid(values: np.ndarray, field: layer_math.Field, side: int) -> np.ndarray:
    """A feature map [H, W] resampled onto the side x side input: each unit sits at the centre of
    its receptive field, linear in between, held constant beyond the outermost centres."""
    return _interpolation(field, values.shape[0], side) @ values @ _interpolation(field, values.shape[1], side).T


def _interpolation(field: layer_math.Field, units: int, side: int) -> np.ndarray:
    """[side, units]: row p holds the weights of the units that linear interpolation mixes at pixel p."""
    centres = np.array([field.centre(index) for index in range(units)])
    pixels = np.arange(side, dtype=np.float64)
    return np.stack([np.interp(pixels, centres, column) for column in np.eye(units)], axis=1).astype(np.float32)


@dataclass(frozen=True)
class Attribution:
    objective_value: float
    saliency: np.ndarray  # [28, 28]: d(objective)/d(pixel)
    gradient_x_input: np.ndarray  # [28, 28]: saliency * pixel
    gradcam_layer: str
    gradcam_native: np.ndarray  # [H, W] at the layer's resolution, signed (Grad-CAM is its positive part)
    gradcam: np.ndarray  # [28, 28]
    channel_weights: np.ndarray  # [C]: Grad-CAM's alpha, the mean gradient per channel
    hirescam_native: np.ndarray  # [H, W]: gradient x activation summed over channels, position by position
    hirescam: np.ndarray  # [28, 28]


def attribute(trace: Trace, objective: Objective, target: int, versus: int | None = None) -> Attribution:
    if not 0 <= target < NUM_CLASSES or (versus is not None and not 0 <= versus < NUM_CLASSES):
        raise ValueError("target and versus must be digits 0-9")
    gradients = backward(trace, trace.layers[-1].name, logit_gradient(trace, objective, target, versus))
    saliency = gradients[INPUT]
    cam_spec = gradcam_layer(trace.layers)
    activation = trace.outputs[cam_spec.name]
    alpha = gradients[cam_spec.name].mean(axis=(1, 2))
    native = np.tensordot(alpha, activation, axes=1)
    hires = (gradients[cam_spec.name] * activation).sum(axis=0)
    field = layer_math.receptive_fields(trace.layers)[cam_spec.name]
    side = trace.image.shape[0]
    return Attribution(
        objective_value=objective_value(trace, objective, target, versus),
        saliency=saliency, gradient_x_input=saliency * trace.image,
        gradcam_layer=cam_spec.name, gradcam_native=native, gradcam=to_input_grid(native, field, side),
        channel_weights=alpha, hirescam_native=hires, hirescam=to_input_grid(hires, field, side),
    )
