"""Where two models of one architecture (PyTorch's and TensorFlow's) differ on one input.

The two networks were trained separately: channel k of one has no reason to be channel k of the
other. Layers are compared after the contract's layout alignment (every spatial output is NCHW in
both files; `flatten` is brought back to [C, H, W] with each model's flatten order), then:

- spatial layers: each channel of model A is matched to one channel of model B by the correlation
  of their maps over the positions of this input (greedy one-to-one, strongest pairs first). A
  layer's agreement is the mean correlation of its matched pairs; 1 - r is a pair's difference.
  Channels that are constant for this input (dead after a ReLU) cannot be correlated: they are
  counted apart and matched last, with r = 0 unless both are constant.
- dense layers (fc1 and its ReLU): units have no positions, so one input says nothing about which
  unit corresponds to which; only the layers' statistics are compared.
- the logits (fc2) and probabilities: class k is class k in both: compared element by element.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from contract.spec import NUM_CLASSES
from service import layer_math
from service.attribution import Trace

CONSTANT = 1e-6  # a map whose standard deviation is below this (relative to the layer's) is constant


@dataclass(frozen=True)
class Pair:
    a: int
    b: int
    correlation: float


@dataclass(frozen=True)
class LayerComparison:
    name: str
    kind: str
    stats: tuple[dict[str, float], dict[str, float]]
    pairs: list[Pair] = field(default_factory=list)
    constant: tuple[int, int] = (0, 0)  # channels constant for this input, in A and in B
    agreement: float | None = None  # mean correlation of matched pairs; None where nothing is matched
    differences: list[float] | None = None  # A - B element by element, where elements correspond (the logits)


def layer_stats(values: np.ndarray) -> dict[str, float]:
    flat = values.astype(np.float64).ravel()
    return {"min": float(flat.min()), "max": float(flat.max()), "mean": float(flat.mean()), "std": float(flat.std()),
            "active": float((flat > 0).mean())}


def correlations(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pearson correlation of every channel of a [Ca, H, W] with every channel of b [Cb, H, W];
    and which channels of each are constant."""
    flat_a = a.reshape(a.shape[0], -1).astype(np.float64)
    flat_b = b.reshape(b.shape[0], -1).astype(np.float64)
    flat_a = flat_a - flat_a.mean(axis=1, keepdims=True)
    flat_b = flat_b - flat_b.mean(axis=1, keepdims=True)
    norm_a, norm_b = np.linalg.norm(flat_a, axis=1), np.linalg.norm(flat_b, axis=1)
    constant_a = norm_a <= CONSTANT * max(float(norm_a.max()), 1e-12)
    constant_b = norm_b <= CONSTANT * max(float(norm_b.max()), 1e-12)
    safe_a = np.where(constant_a, 1.0, norm_a)[:, None]
    safe_b = np.where(constant_b, 1.0, norm_b)[:, None]
    matrix = (flat_a / safe_a) @ np.ascontiguousarray((flat_b / safe_b).T)  # a transposed view is 100x slower here
    matrix[constant_a] = 0.0
    matrix[:, constant_b] = 0.0
    matrix[np.ix_(constant_a, constant_b)] = 1.0  # two constant maps are alike
    return matrix, constant_a, constant_b


def greedy_match(matrix: np.ndarray) -> list[Pair]:
    """One-to-one pairs, the most correlated first (the first of equals)."""
    left = matrix.astype(np.float64, copy=True)
    pairs: list[Pair] = []
    for _ in range(min(matrix.shape)):
        a, b = divmod(int(np.argmax(left)), left.shape[1])
        pairs.append(Pair(a, b, float(matrix[a, b])))
        left[a, :] = -np.inf
        left[:, b] = -np.inf
    return sorted(pairs, key=lambda pair: pair.a)


def aligned(trace: Trace, name: str) -> np.ndarray:
    """A layer's output in the contract's common layout: `flatten` back to [C, H, W]."""
    position = trace.index(name)
    values = trace.outputs[name]
    if trace.layers[position].kind == "flatten":
        return layer_math.unflatten(values, trace.layers[position - 1].shape, trace.flatten_order)
    return values


def compare_layers(a: Trace, b: Trace) -> list[LayerComparison]:
    if [spec.name for spec in a.layers] != [spec.name for spec in b.layers]:
        raise ValueError("the two models have different layers")
    result = []
    for spec in a.layers:
        values_a, values_b = aligned(a, spec.name), aligned(b, spec.name)
        stats = (layer_stats(values_a), layer_stats(values_b))
        if values_a.ndim == 3:
            matrix, constant_a, constant_b = correlations(values_a, values_b)
            pairs = greedy_match(matrix)
            result.append(LayerComparison(spec.name, spec.kind, stats, pairs, (int(constant_a.sum()), int(constant_b.sum())),
                                          float(np.mean([pair.correlation for pair in pairs]))))
        elif values_a.shape[0] == NUM_CLASSES:
            result.append(LayerComparison(spec.name, spec.kind, stats,
                                          differences=(values_a - values_b).astype(np.float64).tolist()))
        else:
            result.append(LayerComparison(spec.name, spec.kind, stats))
    return result


def probability_difference(a: Trace, b: Trace) -> dict[str, Any]:
    """Element-wise difference (A - B), total variation distance, and Jensen-Shannon divergence (bits)."""
    p, q = a.probabilities.astype(np.float64), b.probabilities.astype(np.float64)
    middle = (p + q) / 2

    def kl(x: np.ndarray, y: np.ndarray) -> float:
        mask = x > 0
        return float(np.sum(x[mask] * np.log2(x[mask] / y[mask])))

    return {"difference": (p - q).tolist(), "total_variation": float(np.abs(p - q).sum() / 2),
            "jensen_shannon_bits": max(0.0, (kl(p, middle) + kl(q, middle)) / 2),
            "same_prediction": int(np.argmax(p)) == int(np.argmax(q))}
