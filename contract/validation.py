"""Is this ONNX model a contract model? `validate_model` answers, naming the first thing wrong."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from contract.metadata import REQUIRED_QUANTIZATION, REQUIRED_QUANTIZATION_SOURCE, ModelMetadata
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


QUANTIZED_WEIGHT_TYPES = (TensorProto.INT8, TensorProto.UINT8)
# A weights entry with any of these keys describes an integer layer (the other layers stay float32).
QUANTIZATION_KEYS = ("weight_scale", "weight_zero_point", "bias_scale", "bias_zero_point")
# The axis of each stored weight layout that holds the output channels: a per-channel scale runs along it.
OUT_AXIS = {"OIHW": 0, "HWIO": 3, "out_in": 0, "in_out": 1}


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

    if metadata.quantized:
        _check_quantization(metadata.quantization)
    tensors = {init.name: init for init in graph.initializer}
    for layer in layers:
        if layer.kind in WEIGHTED_KINDS:
            entry = metadata.weights.get(layer.name, {})
            for role in ("weight", "bias"):
                if entry.get(role) not in initializers:
                    raise ContractError(f"layer {layer.name!r} has no {role} initializer named in the metadata")
            if any(key in entry for key in QUANTIZATION_KEYS):
                if not metadata.quantized:
                    raise ContractError(f"layer {layer.name!r} is quantized but the metadata has no 'quantization'")
                _check_quantized_layer(layer.name, entry, tensors)
            else:
                for role in ("weight", "bias"):
                    if tensors[entry[role]].data_type != TensorProto.FLOAT:
                        raise ContractError(f"layer {layer.name!r} {role} is not float32 and the metadata names no "
                                            f"{role}_scale for it")
    return ValidatedModel(metadata=metadata, layers=layers, outputs=tuple(wanted))


def _check_quantization(quantization: object) -> None:
    if not isinstance(quantization, dict):
        raise ContractError("metadata 'quantization' must be a JSON object")
    missing = [key for key in REQUIRED_QUANTIZATION if key not in quantization]
    source = quantization.get("source")
    if not missing and isinstance(source, dict):
        missing = [f"source.{key}" for key in REQUIRED_QUANTIZATION_SOURCE if key not in source]
    elif not missing:
        missing = ["source (an object)"]
    if missing:
        raise ContractError(f"metadata 'quantization' is missing {', '.join(missing)}")


def _count(tensor: onnx.TensorProto) -> int:
    return int(np.prod(tensor.dims, dtype=np.int64))


def _check_quantized_layer(name: str, entry: dict[str, str], tensors: dict[str, onnx.TensorProto]) -> None:
    """A quantized layer stores integers plus, for its weight and its bias, a float scale and a
    zero point of the stored type: one for the tensor or one per output channel."""
    weight, bias = tensors[entry["weight"]], tensors[entry["bias"]]
    if weight.data_type not in QUANTIZED_WEIGHT_TYPES:
        raise ContractError(f"layer {name!r} weight of a quantized model must be int8 or uint8")
    if bias.data_type != TensorProto.INT32:
        raise ContractError(f"layer {name!r} bias of a quantized model must be int32")
    layout = entry.get("layout", "")
    if layout not in OUT_AXIS or len(weight.dims) != (4 if layout in ("OIHW", "HWIO") else 2):
        raise ContractError(f"layer {name!r} weight layout {layout!r} does not fit its shape {list(weight.dims)}")
    channels = weight.dims[OUT_AXIS[layout]]
    for role, stored in (("weight", weight), ("bias", bias)):
        for part in ("scale", "zero_point"):
            if entry.get(f"{role}_{part}") not in tensors:
                raise ContractError(f"layer {name!r} has no {role}_{part} initializer named in the metadata")
        scale, zero_point = tensors[entry[f"{role}_scale"]], tensors[entry[f"{role}_zero_point"]]
        if scale.data_type != TensorProto.FLOAT or zero_point.data_type != stored.data_type:
            raise ContractError(f"layer {name!r} {role}_scale must be float32 and {role}_zero_point "
                                f"of the {role}'s type")
        if _count(scale) not in (1, channels) or _count(zero_point) != _count(scale):
            raise ContractError(f"layer {name!r} {role} needs one scale and zero point, or one per each of its "
                                f"{channels} output channels")


def canonical_weight(array: np.ndarray, layout: str) -> np.ndarray:
    """Undo an exporter's layout: conv to OIHW, dense to [out, in]."""
    if layout == "HWIO":
        return array.transpose(3, 2, 0, 1)
    if layout == "in_out":
        return array.T
    return array


def dequantize(stored: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, layout: str = "") -> np.ndarray:
    """What ONNX's DequantizeLinear computes, `(q - zero_point) * scale` in float32, in canonical
    layout; a per-channel scale runs along the output channels (axis 0 once canonical)."""
    canonical = canonical_weight(stored, layout)
    per_channel = (-1,) + (1,) * (canonical.ndim - 1)
    shifted = canonical.astype(np.int64) - zero_point.astype(np.int64).reshape(per_channel)
    return np.ascontiguousarray(shifted.astype(np.float32) * scale.astype(np.float32).reshape(per_channel))


def layer_weights(model: onnx.ModelProto, metadata: ModelMetadata) -> dict[str, dict[str, np.ndarray]]:
    """Each weighted layer's weight (conv OIHW, dense [out, in]) and bias as float32, from the
    initializers the metadata names; a quantized model's integers come back dequantized."""
    arrays = {init.name: init for init in model.graph.initializer}

    def read(name: str) -> np.ndarray:
        return numpy_helper.to_array(arrays[name])

    weights: dict[str, dict[str, np.ndarray]] = {}
    for layer, entry in metadata.weights.items():
        layout = entry.get("layout", "")
        if any(key in entry for key in QUANTIZATION_KEYS):
            weights[layer] = {
                "weight": dequantize(read(entry["weight"]), read(entry["weight_scale"]),
                                     read(entry["weight_zero_point"]), layout),
                "bias": dequantize(read(entry["bias"]), read(entry["bias_scale"]), read(entry["bias_zero_point"])),
            }
        else:
            weights[layer] = {
                "weight": np.ascontiguousarray(canonical_weight(read(entry["weight"]), layout)),
                "bias": read(entry["bias"]),
            }
    return weights
