"""How far two served models agree: both run through ONNX Runtime on the full MNIST test set."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from training import data
from training.common import onnx_predict
from contract import store
from contract.metadata import ModelMetadata
from contract.validation import validate_model



@dataclass(frozen=True)
class ModelLocation:
    name: str
    version: int | None  # None when the file does not sit in a numeric version directory
    path: Path


def locate_model(path: Path) -> ModelLocation:
    """`models/<name>` (its highest numeric version) or a `model.onnx` file."""
    return ModelLocation(*store.locate(path))


def _describe(location: ModelLocation, metadata: ModelMetadata, predicted: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    return {
        "name": location.name,
        "version": location.version,
        "path": str(location.path),
        "framework": metadata.framework,
        "architecture": metadata.architecture,
        "accuracy": float(np.mean(predicted == labels)),
        "errors": int(np.sum(predicted != labels)),
        "recorded_test_accuracy": metadata.test_accuracy,
    }


def compare_models(first: Path, second: Path, data_dir: str | Path | None = None) -> dict[str, Any]:
    """Accuracy of each model and the fraction of test images on which their labels agree."""
    test = data.load_split("test", data_dir)
    labels = test.labels.astype(np.int64)
    described, predictions = [], []
    for path in (first, second):
        location = locate_model(Path(path))
        model = onnx.load(location.path)
        metadata = validate_model(model).metadata
        _, probabilities = onnx_predict(model, test.images)
        predicted = probabilities.argmax(axis=1)
        predictions.append(predicted)
        described.append(_describe(location, metadata, predicted, labels))
    agree = predictions[0] == predictions[1]
    return {
        "test_images": int(len(labels)),
        "first": described[0],
        "second": described[1],
        "agreement": float(np.mean(agree)),
        "disagreements": int(np.sum(~agree)),
        "both_wrong": int(np.sum((predictions[0] != labels) & (predictions[1] != labels))),
        "disagreeing_images": np.nonzero(~agree)[0][:20].tolist(),
    }
