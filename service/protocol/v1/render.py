"""Results -> V1 response bodies: predictions, model descriptions, layers, weights, occlusion maps."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from contract.spec import INPUT_NAME, INPUT_SHAPE, LayerSpec
from service.dataplane import ModelDescription
from service.protocol.v1 import tensors
from service.protocol.v1.options import TensorEncoding

TRAINING_FIELDS = ("epochs", "batch_size", "optimizer", "learning_rate", "schedule", "seed", "train_images")


def training(settings: dict[str, Any]) -> dict[str, Any]:
    """How the model was trained: the main settings and every augmentation setting it records."""
    shown = {key: settings.get(key) for key in TRAINING_FIELDS}
    shown.update({key: value for key, value in settings.items() if key.startswith("augment")})
    if "init_sha256" in settings:  # fine-tuned from another model: which one (its file's hash, not a local path)
        shown["init_sha256"] = settings["init_sha256"]
    return shown


def predictions(probabilities: np.ndarray, top_k: int) -> list[dict[str, Any]]:
    """One prediction per row: label, confidence, the ten probabilities and the top k."""
    order = np.argsort(-probabilities, axis=1, kind="stable")[:, :top_k]
    result = []
    for row, ranked in zip(probabilities, order.tolist()):
        label = ranked[0]
        result.append({
            "label": label,
            "confidence": row[label],
            "probabilities": row,
            "top_k": [{"label": digit, "probability": row[digit]} for digit in ranked],
        })
    return result


def input_rows(images: np.ndarray) -> np.ndarray:
    return np.round(images, 4)


def model(description: ModelDescription) -> dict[str, Any]:
    meta = description.metadata
    batching = description.batching
    return {
        "name": description.name, "version": description.version, "versions": description.versions,
        "framework": meta.framework, "framework_version": meta.framework_version, "architecture": meta.architecture,
        "test_accuracy": meta.test_accuracy, "test_loss": meta.test_loss, "provider": description.provider,
        "ready": description.ready, "created": meta.created, "flatten_order": meta.flatten_order,
        "input": {"name": INPUT_NAME, "datatype": "FP32", "shape": [-1, *INPUT_SHAPE]},
        "layers": [layer.public() for layer in description.layers],
        "outputs": list(description.outputs),
        "batching": {"max_batch_size": batching.max_batch_size, "max_queue_delay_ms": batching.max_queue_delay_s * 1000,
                     "max_queue_size": batching.max_queue_size, "instances": batching.instances,
                     "request_timeout_s": batching.timeout_s},
        "training": training(meta.training),
        # int8 variants: how they were made and from which float model (docs/int8.md); null for float models
        "quantization": meta.quantization or None,
    }


def layers(specs: Sequence[LayerSpec], outputs: Mapping[str, np.ndarray], options: TensorEncoding) -> list[dict[str, Any]]:
    """Each layer's values for the first image: name, kind, shape, statistics and the encoded data."""
    shaped = []
    for spec in specs:
        values = outputs[spec.name][0]
        shaped.append({"name": spec.name, "kind": spec.kind, "shape": list(spec.shape),
                       "stats": tensors.statistics(values, options.bins), "encoding": options.encoding,
                       "data": tensors.encode(values, options.encoding, options.dtype)})
    return shaped


def weights(spec: LayerSpec, params: Mapping[str, np.ndarray], options: TensorEncoding) -> dict[str, Any]:
    encoded = {role: {"shape": list(values.shape), "stats": tensors.statistics(values, options.bins),
                      "encoding": options.encoding, "data": tensors.encode_weight(values, options.encoding, options.dtype)}
               for role, values in params.items()}
    return {"layer": spec.name, "kind": spec.kind, "layout": "OIHW" if spec.kind == "conv" else "out_in", **encoded}
