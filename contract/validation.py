"""Is this ONNX model a contract model? `validate_model` answers, naming the first thing wrong."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from contract.metadata import ModelMetadata
from contract.spec import (
    ARCHITECTURES,
    CONTRACT_VERSION,
    INPUT_NAME,
    INPUT_SHAPE,
    LOGITS,
    NUM_CLASSES,
    PROBABILITIES,
    WEIGHTED_KINDS,
    ContractError,
    LayerSpec,
    output_names,
)


def _dims(value_info: onnx.ValueInfoProto) -> list[int | str]:
    dims: list[int | str] = []
    for dim in value_info.type.tensor_type.shape.dim:
        dims.append(dim.dim_value if dim.HasField("dim_value") else (dim.dim_param or "?"))
    return dims


@dataclass(frozen=True)
class ValidatedModel:
    metadata: ModelMetadata
    layers: tuple[LayerSpec, ...]
    outputs: tuple[str, ...]


def validate_model(model: onnx.ModelProto) -> ValidatedModel:
    """Check a model against the contract; raise ContractError naming the first thing wrong."""
    graph = model.graph
    initializers = {init.name for init in graph.initializer}
    inputs = [inp for inp in graph.input if inp.name not in initializers]
    if [inp.name for inp in inputs] != [INPUT_NAME]:
        raise ContractError(f"inputs are {[inp.name for inp in inputs]}, the contract wants ['{INPUT_NAME}']")
    if inputs[0].type.tensor_type.elem_type != TensorProto.FLOAT:
        raise ContractError("input 'image' must be float32")
    dims = _dims(inputs[0])
    if len(dims) != 4 or isinstance(dims[0], int) or tuple(dims[1:]) != INPUT_SHAPE:
        raise ContractError(f"input 'image' has shape {dims}, the contract wants [batch, 1, 28, 28]")

    metadata = ModelMetadata.from_props({prop.key: prop.value for prop in model.metadata_props})
    if metadata.contract_version != CONTRACT_VERSION:
        raise ContractError(f"contract version {metadata.contract_version}, this server speaks {CONTRACT_VERSION}")
    if metadata.architecture not in ARCHITECTURES:
        raise ContractError(f"unknown architecture {metadata.architecture!r}")
    layers = ARCHITECTURES[metadata.architecture]
    declared = json.loads({p.key: p.value for p in model.metadata_props}["layers"])
    if declared != [layer.public() for layer in layers]:
        raise ContractError(f"metadata layer list does not match the {metadata.architecture} architecture")

    wanted = output_names(metadata.architecture)
    actual = [out.name for out in graph.output]
    if actual != wanted:
        raise ContractError(f"outputs are {actual}, the contract wants {wanted}")
    shapes = {LOGITS: (NUM_CLASSES,), PROBABILITIES: (NUM_CLASSES,)} | {layer.name: layer.shape for layer in layers}
    for output in graph.output:
        if output.type.tensor_type.elem_type != TensorProto.FLOAT:
            raise ContractError(f"output {output.name!r} must be float32")
        out_dims = _dims(output)
        if len(out_dims) != 1 + len(shapes[output.name]) or tuple(out_dims[1:]) != shapes[output.name]:
            raise ContractError(f"output {output.name!r} has shape {out_dims}, expected [batch, {shapes[output.name]}]")

    for layer in layers:
        if layer.kind in WEIGHTED_KINDS:
            entry = metadata.weights.get(layer.name, {})
            for role in ("weight", "bias"):
                if entry.get(role) not in initializers:
                    raise ContractError(f"layer {layer.name!r} has no {role} initializer named in the metadata")
    return ValidatedModel(metadata=metadata, layers=layers, outputs=tuple(wanted))


def canonical_weight(array: np.ndarray, layout: str) -> np.ndarray:
    """Undo an exporter's layout: conv to OIHW, dense to [out, in]."""
    if layout == "HWIO":
        return array.transpose(3, 2, 0, 1)
    if layout == "in_out":
        return array.T
    return array


def layer_weights(model: onnx.ModelProto, metadata: ModelMetadata) -> dict[str, dict[str, np.ndarray]]:
    """Each weighted layer's weight (conv OIHW, dense [out, in]) and bias, from the initializers
    the metadata names."""
    initializers = {init.name: init for init in model.graph.initializer}
    weights: dict[str, dict[str, np.ndarray]] = {}
    for layer, entry in metadata.weights.items():
        weight = numpy_helper.to_array(initializers[entry["weight"]])
        weights[layer] = {
            "weight": np.ascontiguousarray(canonical_weight(weight, entry.get("layout", ""))),
            "bias": numpy_helper.to_array(initializers[entry["bias"]]),
        }
    return weights
