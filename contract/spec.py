"""The model contract's specification: the input, the outputs and the two architectures' layers.

Both trainers build their networks from `ARCHITECTURES`; the service and the trainers check a
model file against it with `contract.validation.validate_model`. docs/model-contract.md is the prose.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

CONTRACT_VERSION = "1"
INPUT_NAME = "image"
INPUT_SHAPE = (1, 28, 28)  # without the batch dimension
NUM_CLASSES = 10
LOGITS = "logits"
PROBABILITIES = "probabilities"
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081

LAYER_KINDS = ("conv", "relu", "pool", "flatten", "dense")
WEIGHTED_KINDS = ("conv", "dense")


class ContractError(ValueError):
    """A model, or an export, that does not follow the contract."""


@dataclass(frozen=True)
class LayerSpec:
    name: str
    kind: str
    shape: tuple[int, ...]  # output shape without batch: NCHW's CHW, or (features,)
    kernel: int = 0  # conv: square kernel size; pool: window and stride
    padding: str = ""  # conv: "same" or "valid"
    dropout_after: float = 0.0  # training only; identity at inference

    @property
    def channels(self) -> int:
        return self.shape[0]

    def public(self) -> dict[str, Any]:
        """What the metadata and the API show of a layer."""
        return {"name": self.name, "kind": self.kind, "shape": list(self.shape)}


def _cnn() -> tuple[LayerSpec, ...]:
    return (
        LayerSpec("conv1", "conv", (32, 28, 28), kernel=3, padding="same"),
        LayerSpec("relu1", "relu", (32, 28, 28)),
        LayerSpec("conv2", "conv", (32, 28, 28), kernel=3, padding="same"),
        LayerSpec("relu2", "relu", (32, 28, 28)),
        LayerSpec("pool1", "pool", (32, 14, 14), kernel=2, dropout_after=0.5),
        LayerSpec("conv3", "conv", (64, 14, 14), kernel=3, padding="same"),
        LayerSpec("relu3", "relu", (64, 14, 14)),
        LayerSpec("conv4", "conv", (64, 14, 14), kernel=3, padding="same"),
        LayerSpec("relu4", "relu", (64, 14, 14)),
        LayerSpec("pool2", "pool", (64, 7, 7), kernel=2, dropout_after=0.5),
        LayerSpec("flatten", "flatten", (3136,)),
        LayerSpec("fc1", "dense", (512,)),
        LayerSpec("relu5", "relu", (512,), dropout_after=0.5),
        LayerSpec("fc2", "dense", (10,)),
    )


def _lenet() -> tuple[LayerSpec, ...]:
    return (
        LayerSpec("conv1", "conv", (20, 24, 24), kernel=5, padding="valid"),
        LayerSpec("relu1", "relu", (20, 24, 24)),
        LayerSpec("pool1", "pool", (20, 12, 12), kernel=2),
        LayerSpec("conv2", "conv", (50, 8, 8), kernel=5, padding="valid"),
        LayerSpec("relu2", "relu", (50, 8, 8)),
        LayerSpec("pool2", "pool", (50, 4, 4), kernel=2),
        LayerSpec("flatten", "flatten", (800,)),
        LayerSpec("fc1", "dense", (500,)),
        LayerSpec("relu3", "relu", (500,)),
        LayerSpec("fc2", "dense", (10,)),
    )


ARCHITECTURES: dict[str, tuple[LayerSpec, ...]] = {"cnn": _cnn(), "lenet": _lenet()}


def output_names(architecture: str) -> list[str]:
    """The graph outputs, in order: logits, probabilities, then every layer in network order."""
    return [LOGITS, PROBABILITIES, *(layer.name for layer in ARCHITECTURES[architecture])]
