"""The contract's layers in numpy, forward and backward, for one image: conv (cross-correlation,
`same` or `valid` padding), max pooling, flatten in either flatten order, dense. The served models
are run by ONNX Runtime; these recompute single steps from the served weights so that gradients and
per-channel contributions can be taken (ONNX Runtime has no autograd). Shapes have no batch axis:
feature maps are [C, H, W], vectors [F]."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from contract.spec import MNIST_MEAN, MNIST_STD, LayerSpec

FLATTEN_ORDERS = ("CHW", "HWC")
# Values of a pooling window this close to its max (relative, at least absolute) are equal: float32
# rounding in ONNX Runtime may tell apart values that are equal in exact arithmetic.
TIE_TOLERANCE = 1e-6


def normalize(image: np.ndarray) -> np.ndarray:
    """The model's first step, inside every graph: [28, 28] in [0, 1] -> conv1's input [1, 28, 28]."""
    return ((image.astype(np.float32) - np.float32(MNIST_MEAN)) / np.float32(MNIST_STD))[None]


def conv_padding(spec: LayerSpec) -> int:
    """Zeros added on each side: `same` keeps the size (odd kernels), `valid` adds none."""
    return spec.kernel // 2 if spec.padding == "same" else 0


def conv_forward(inputs: np.ndarray, weight: np.ndarray, bias: np.ndarray, padding: int) -> np.ndarray:
    """[Cin, H, W] * [Cout, Cin, k, k] (OIHW, cross-correlation as in ONNX Conv) -> [Cout, H', W']."""
    return conv_forward_by_input(inputs, weight, padding).sum(axis=1) + bias[:, None, None]


def conv_forward_by_input(inputs: np.ndarray, weight: np.ndarray, padding: int) -> np.ndarray:
    """The conv's output split by input channel, without the bias: [Cout, Cin, H', W'], so that
    [o, c] is what input channel c adds to output channel o at every position."""
    out_channels, in_channels, kh, kw = weight.shape
    padded = np.pad(inputs, ((0, 0), (padding, padding), (padding, padding)))
    height, width = padded.shape[1] - kh + 1, padded.shape[2] - kw + 1
    result = np.zeros((out_channels, in_channels, height, width), np.result_type(inputs, weight))
    for i in range(kh):
        for j in range(kw):
            window = padded[:, i : i + height, j : j + width]
            result += weight[:, :, i, j][:, :, None, None] * window[None]
    return result


def conv_input_gradient(gradient: np.ndarray, weight: np.ndarray, padding: int, input_shape: tuple[int, ...]) -> np.ndarray:
    """d(objective)/d(conv input) from d(objective)/d(conv output) [Cout, H', W']: the transposed
    cross-correlation (each input pixel collects the gradient of every output it feeds)."""
    out_channels, in_channels, kh, kw = weight.shape
    _, height, width = gradient.shape
    padded = np.zeros((in_channels, input_shape[1] + 2 * padding, input_shape[2] + 2 * padding),
                      np.result_type(gradient, weight))
    flat = gradient.reshape(out_channels, height * width)
    for i in range(kh):
        for j in range(kw):
            padded[:, i : i + height, j : j + width] += (weight[:, :, i, j].T @ flat).reshape(in_channels, height, width)
    return padded[:, padding : padding + input_shape[1], padding : padding + input_shape[2]]


def _windows(inputs: np.ndarray, size: int) -> np.ndarray:
    """[C, H, W] -> [C, H/size, W/size, size*size]: the non-overlapping pooling windows."""
    channels, height, width = inputs.shape
    rows, cols = height // size, width // size
    cropped = inputs[:, : rows * size, : cols * size]
    return cropped.reshape(channels, rows, size, cols, size).transpose(0, 1, 3, 2, 4).reshape(channels, rows, cols, size * size)


def maxpool_forward(inputs: np.ndarray, size: int) -> np.ndarray:
    return _windows(inputs, size).max(axis=3)


def maxpool_input_gradient(gradient: np.ndarray, inputs: np.ndarray, size: int) -> np.ndarray:
    """The gradient of a max pool goes to the largest value of each window. Where several are
    equal (a uniform background gives equal values after the first conv) the max has no gradient;
    it is shared equally among them, the limit of a smooth maximum, which for two equal values is
    also what a central finite difference measures."""
    windows = _windows(inputs, size)
    channels, rows, cols, _ = windows.shape
    peak = windows.max(axis=3, keepdims=True)
    winners = windows >= peak - TIE_TOLERANCE * np.maximum(1.0, np.abs(peak))
    routed = winners * (gradient[..., None] / winners.sum(axis=3, keepdims=True))
    result = np.zeros(inputs.shape, routed.dtype)
    result[:, : rows * size, : cols * size] = (
        routed.reshape(channels, rows, cols, size, size).transpose(0, 1, 3, 2, 4).reshape(channels, rows * size, cols * size))
    return result


def flatten(feature_maps: np.ndarray, order: str) -> np.ndarray:
    """[C, H, W] -> [C*H*W] in the model's flatten order (docs/model-contract.md)."""
    return feature_maps.reshape(-1) if order == "CHW" else feature_maps.transpose(1, 2, 0).reshape(-1)


def unflatten(vector: np.ndarray, shape: tuple[int, ...], order: str) -> np.ndarray:
    """flatten's inverse: [C*H*W] in the model's flatten order -> [C, H, W]."""
    channels, height, width = shape
    if order == "CHW":
        return vector.reshape(channels, height, width)
    return vector.reshape(height, width, channels).transpose(2, 0, 1)


def check_flatten_order(order: str) -> None:
    if order not in FLATTEN_ORDERS:
        raise ValueError(f"unknown flatten order {order!r}; known: {', '.join(FLATTEN_ORDERS)}")


@dataclass(frozen=True)
class Field:
    """Where a layer's unit (y, x) looks in the input: rows and columns `start + stride * y` to
    `start + stride * y + size - 1` (before clipping to the image; `same` padding makes start negative)."""

    start: float
    stride: int
    size: int

    def box(self, y: int, x: int, side: int) -> tuple[int, int, int, int]:
        """(top, left, bottom, right), inclusive, clipped to a side x side input."""
        top, left = int(self.start + self.stride * y), int(self.start + self.stride * x)
        return max(0, top), max(0, left), min(side - 1, top + self.size - 1), min(side - 1, left + self.size - 1)

    def centre(self, index: float) -> float:
        return self.start + self.stride * index + (self.size - 1) / 2


def receptive_fields(layers: tuple[LayerSpec, ...]) -> dict[str, Field]:
    """Each spatial layer's receptive field on the input, from its kernels, paddings and pools."""
    start, stride, size = 0.0, 1, 1
    fields: dict[str, Field] = {}
    for spec in layers:
        if len(spec.shape) != 3:
            break
        if spec.kind == "conv":
            start -= conv_padding(spec) * stride
            size += (spec.kernel - 1) * stride
        elif spec.kind == "pool":
            size += (spec.kernel - 1) * stride
            stride *= spec.kernel
        fields[spec.name] = Field(start, stride, size)
    return fields
