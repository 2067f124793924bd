"""Framework export -> contract model: input and output names, weight names, metadata, and the
check that ONNX Runtime computes what the framework computed."""

from __future__ import annotations

from typing import Iterable, Mapping

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
    ContractError,
    output_names,
)
from contract.validation import validate_model


def _set_batch_dim(value_info: onnx.ValueInfoProto, shape: Iterable[int]) -> None:
    tensor_type = value_info.type.tensor_type
    tensor_type.elem_type = TensorProto.FLOAT
    del tensor_type.shape.dim[:]
    tensor_type.shape.dim.add().dim_param = "batch"
    for size in shape:
        tensor_type.shape.dim.add().dim_value = size


def _rename_tensor(graph: onnx.GraphProto, old: str, new: str) -> None:
    if old == new:
        return
    for node in graph.node:
        node.input[:] = [new if name == old else name for name in node.input]
        node.output[:] = [new if name == old else name for name in node.output]
    for init in graph.initializer:
        if init.name == old:
            init.name = new
    for info in list(graph.value_info) + list(graph.output) + list(graph.input):
        if info.name == old:
            info.name = new


def _candidate_layouts(canonical: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """How an exporter may have stored a canonical weight (OIHW conv, [out, in] dense)."""
    if canonical.ndim == 4:
        return [("OIHW", canonical), ("HWIO", canonical.transpose(2, 3, 1, 0))]
    if canonical.ndim == 2:
        return [("out_in", canonical), ("in_out", canonical.T)]
    return [("vector", canonical)]


def name_weights(model: onnx.ModelProto, canonical_weights: Mapping[str, Mapping[str, np.ndarray]]) -> dict[str, dict[str, str]]:
    """Rename the initializers that hold each layer's weights to `<layer>.weight`/`<layer>.bias`.

    `canonical_weights` comes from the framework model, in canonical layout: conv OIHW, dense
    [out, in]. Initializers are matched by value, since exporters name and transpose them
    freely; the layout found is returned for the metadata so that readers can undo it.
    """
    graph = model.graph
    arrays = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    found: dict[str, dict[str, str]] = {}
    for layer, params in canonical_weights.items():
        entry: dict[str, str] = {}
        for role, canonical in params.items():
            match = None
            for layout, candidate in _candidate_layouts(np.asarray(canonical, dtype=np.float32)):
                for init_name, array in arrays.items():
                    if array.shape == candidate.shape and np.array_equal(array, candidate):
                        match = (init_name, layout)
                        break
                if match:
                    break
            if match is None:
                raise ContractError(f"no initializer holds {layer}.{role} in a known layout")
            init_name, layout = match
            new_name = f"{layer}.{role}"
            _rename_tensor(graph, init_name, new_name)
            arrays[new_name] = arrays.pop(init_name)
            entry[role] = new_name
            if role == "weight":
                entry["layout"] = layout
        found[layer] = entry
    return found


def finalize_model(
    model: onnx.ModelProto,
    graph_outputs: Mapping[str, str],
    metadata: ModelMetadata,
    canonical_weights: Mapping[str, Mapping[str, np.ndarray]],
) -> onnx.ModelProto:
    """Give an exported graph the contract's input, outputs, weight names and metadata.

    `graph_outputs` maps each contract output name to the tensor that holds it in the exported
    graph. A tensor that serves two outputs (fc2 is also logits) gets an Identity node.
    """
    graph = model.graph
    inputs = [inp for inp in graph.input if inp.name not in {init.name for init in graph.initializer}]
    if len(inputs) != 1:
        raise ContractError(f"the exported graph has {len(inputs)} inputs, the contract wants one")
    _rename_tensor(graph, inputs[0].name, INPUT_NAME)
    _set_batch_dim(inputs[0], INPUT_SHAPE)

    wanted = output_names(metadata.architecture)
    if sorted(graph_outputs) != sorted(wanted):
        raise ContractError(f"outputs {sorted(graph_outputs)} do not match the contract's {sorted(wanted)}")
    shapes = {LOGITS: (NUM_CLASSES,), PROBABILITIES: (NUM_CLASSES,)}
    shapes.update({layer.name: layer.shape for layer in ARCHITECTURES[metadata.architecture]})

    renamed: set[str] = set()
    del graph.output[:]
    for name in wanted:
        source = graph_outputs[name]
        if source in renamed or source == INPUT_NAME:
            graph.node.append(onnx.helper.make_node("Identity", [source], [name], name=f"{name}_identity"))
        else:
            _rename_tensor(graph, source, name)
            renamed.add(name)
            # later outputs that pointed at the old name now point at the new one
            graph_outputs = {key: (name if value == source else value) for key, value in graph_outputs.items()}
        output = graph.output.add()
        output.name = name
        _set_batch_dim(output, shapes[name])

    metadata.weights = name_weights(model, canonical_weights)
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, metadata.to_props())
    model.doc_string = f"mnist-serve {metadata.architecture} ({metadata.framework}), contract v{CONTRACT_VERSION}"
    onnx.checker.check_model(model)
    validate_model(model)
    return model


class ExportMismatch(ContractError):
    """The ONNX export does not compute what the framework model computes."""


def compare_outputs(
    onnx_outputs: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray], tolerance: float = 1e-4
) -> dict[str, float]:
    """Worst difference per output: absolute for probabilities, relative to the largest
    magnitude of the layer for everything else. Raises ExportMismatch past `tolerance`."""
    errors: dict[str, float] = {}
    for name, expected in reference.items():
        actual = onnx_outputs[name]
        if actual.shape != expected.shape:
            raise ExportMismatch(f"{name}: ONNX shape {actual.shape}, framework shape {expected.shape}")
        diff = float(np.max(np.abs(actual.astype(np.float64) - expected.astype(np.float64)))) if actual.size else 0.0
        scale = 1.0 if name == PROBABILITIES else max(float(np.max(np.abs(expected))), 1e-12)
        errors[name] = diff / scale
    worst = {name: err for name, err in errors.items() if not err <= tolerance}
    if worst:
        raise ExportMismatch("export differs from the framework model: " + ", ".join(f"{k}={v:.2e}" for k, v in worst.items()))
    return errors


def verify_export(model: onnx.ModelProto, images: np.ndarray, reference: Mapping[str, np.ndarray], tolerance: float = 1e-4) -> dict[str, float]:
    """Run the finished model in ONNX Runtime on `images` [n, 1, 28, 28] and compare every output."""
    import onnxruntime as ort

    onnx.checker.check_model(model)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    names = [out.name for out in session.get_outputs()]
    results = dict(zip(names, session.run(names, {INPUT_NAME: images.astype(np.float32)})))
    return compare_outputs(results, reference, tolerance)
