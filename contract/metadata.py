"""The metadata every contract model carries in its ONNX `metadata_props`."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

from contract.spec import ARCHITECTURES, CONTRACT_VERSION, MNIST_MEAN, MNIST_STD, ContractError

REQUIRED_METADATA = (
    "contract_version",
    "framework",
    "framework_version",
    "architecture",
    "layers",
    "flatten_order",
    "weights",
    "test_accuracy",
    "test_loss",
    "training",
    "data_sha256",
    "created",
)

# A quantized model is served under its source's name plus this suffix (cnn-pytorch-int8) and says
# how it was made in the `quantization` key, which must hold at least these entries.
QUANTIZED_SUFFIX = "-int8"
REQUIRED_QUANTIZATION = ("method", "format", "calibration", "source")
REQUIRED_QUANTIZATION_SOURCE = ("name", "version", "sha256")


@dataclass
class ModelMetadata:
    """Everything the contract puts in ONNX `metadata_props` (each value a string there)."""

    framework: str
    framework_version: str
    architecture: str
    flatten_order: str  # "CHW" (PyTorch) or "HWC" (Keras)
    test_accuracy: float
    test_loss: float
    training: dict[str, Any]
    data_sha256: str
    created: str
    weights: dict[str, dict[str, str]] = field(default_factory=dict)
    per_class_accuracy: list[float] = field(default_factory=list)
    quantization: dict[str, Any] = field(default_factory=dict)  # empty: a float model
    contract_version: str = CONTRACT_VERSION

    @property
    def layers(self) -> list[dict[str, Any]]:
        return [layer.public() for layer in ARCHITECTURES[self.architecture]]

    @property
    def quantized(self) -> bool:
        return bool(self.quantization)

    @property
    def model_name(self) -> str:
        """The directory the model is served from: `<architecture>-<framework>[-int8]`."""
        return f"{self.architecture}-{self.framework}{QUANTIZED_SUFFIX if self.quantized else ''}"

    def to_props(self) -> dict[str, str]:
        props: dict[str, str] = {}
        for key, value in {**asdict(self), "layers": self.layers}.items():
            if key == "quantization" and not value:
                continue
            props[key] = value if isinstance(value, str) else json.dumps(value)
        props["input_normalization"] = json.dumps({"mean": MNIST_MEAN, "std": MNIST_STD, "inside_graph": True})
        return props

    @classmethod
    def from_props(cls, props: Mapping[str, str]) -> "ModelMetadata":
        missing = [key for key in REQUIRED_METADATA if key not in props]
        if missing:
            raise ContractError(f"metadata is missing {', '.join(missing)}")
        try:
            return cls(
                framework=props["framework"],
                framework_version=props["framework_version"],
                architecture=props["architecture"],
                flatten_order=props["flatten_order"],
                test_accuracy=float(props["test_accuracy"]),
                test_loss=float(props["test_loss"]),
                training=json.loads(props["training"]),
                data_sha256=props["data_sha256"],
                created=props["created"],
                weights=json.loads(props["weights"]),
                per_class_accuracy=json.loads(props.get("per_class_accuracy", "[]")),
                quantization=json.loads(props.get("quantization", "{}")),
                contract_version=props["contract_version"],
            )
        except (ValueError, TypeError) as exc:
            raise ContractError(f"metadata value is malformed: {exc}") from exc
