"""What the Open Inference Protocol says about the server and a model, for REST and gRPC alike."""

from __future__ import annotations

from typing import Any

from contract.spec import INPUT_NAME, INPUT_SHAPE, LOGITS, NUM_CLASSES, PROBABILITIES
from service import __version__
from service.config import Settings
from service.dataplane import ModelDescription
from service.protocol.v2.datatypes import OUTPUT_DATATYPE

SERVER_NAME = "mnist-serve"
PLATFORM = "onnxruntime_onnx"


def extensions(settings: Settings) -> list[str]:
    """Triton's extensions this server implements; the model repository only where it is on."""
    return ["binary_tensor_data", "model_configuration"] + (["model_repository"] if settings.admin_allowed else [])


def server(settings: Settings) -> dict[str, Any]:
    return {"name": SERVER_NAME, "version": __version__, "extensions": extensions(settings)}


def model(description: ModelDescription) -> dict[str, Any]:
    outputs = [{"name": out, "datatype": OUTPUT_DATATYPE, "shape": [-1, NUM_CLASSES]} for out in (LOGITS, PROBABILITIES)]
    outputs += [{"name": layer.name, "datatype": OUTPUT_DATATYPE, "shape": [-1, *layer.shape]}
                for layer in description.layers]
    return {
        "name": description.name, "versions": [str(v) for v in description.versions], "platform": PLATFORM,
        "inputs": [{"name": INPUT_NAME, "datatype": "FP32", "shape": [-1, *INPUT_SHAPE]}], "outputs": outputs,
        "parameters": {"framework": description.metadata.framework, "architecture": description.metadata.architecture,
                       "provider": description.provider, "version": str(description.version),
                       "max_batch_size": description.batching.max_batch_size},
    }


def model_config(description: ModelDescription, settings: Settings) -> dict[str, Any]:
    """Triton's model configuration (GET /v2/models/{name}/config, gRPC ModelConfig), as a Triton
    user reads it: what a request may carry (max_batch_size: images per request), the dynamic
    batcher's settings, where it runs. Dims leave out the batch dimension, as Triton's do."""
    batching = description.batching
    described = model(description)

    def tensors(specs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{"name": spec["name"], "data_type": f"TYPE_{spec['datatype']}", "dims": spec["shape"][1:]}
                for spec in specs]

    return {
        "name": description.name, "platform": PLATFORM, "backend": "onnxruntime",
        "version_policy": {"specific": {"versions": [description.version]}},
        "max_batch_size": settings.max_images_per_request,
        "input": tensors(described["inputs"]), "output": tensors(described["outputs"]),
        "dynamic_batching": {"preferred_batch_size": [batching.max_batch_size],
                             "max_queue_delay_microseconds": round(batching.max_queue_delay_s * 1_000_000),
                             "default_queue_policy": {"max_queue_size": batching.max_queue_size}},
        "instance_group": [{"name": description.name, "count": batching.instances,
                            "kind": "KIND_GPU" if description.provider == "CUDAExecutionProvider" else "KIND_CPU"}],
        "default_model_filename": "model.onnx",
        "parameters": {key: {"string_value": str(value)} for key, value in described["parameters"].items()},
    }
