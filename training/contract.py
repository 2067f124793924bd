"""The model contract: what every served model looks like, whichever framework trained it.

Both trainers build their networks from `ARCHITECTURES`, finish their ONNX graphs with
`finalize_model`, and the service accepts a file only when `validate_model` passes.
See docs/model-contract.md for the prose version.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Mapping

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

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
    contract_version: str = CONTRACT_VERSION

    @property
    def layers(self) -> list[dict[str, Any]]:
        return [layer.public() for layer in ARCHITECTURES[self.architecture]]

    def to_props(self) -> dict[str, str]:
        props: dict[str, str] = {}
        for key, value in {**asdict(self), "layers": self.layers}.items():
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
                contract_version=props["contract_version"],
            )
        except (ValueError, TypeError) as exc:
            raise ContractError(f"metadata value is malformed: {exc}") from exc


def _dims(value_info: onnx.ValueInfoProto) -> list[int | str]:
    dims: list[int | str] = []
    for dim in value_info.type.tensor_type.shape.dim:
        dims.append(dim.dim_value if dim.HasField("dim_value") else (dim.dim_param or "?"))
    return dims


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
