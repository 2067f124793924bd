"""Every committed model follows the contract, and both frameworks' models look alike from outside."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, numpy_helper

from tests.conftest import MODELS_DIR
from contract.metadata import REQUIRED_METADATA
from contract.spec import (
    ARCHITECTURES,
    INPUT_NAME,
    LOGITS,
    PROBABILITIES,
    ContractError,
    LayerSpec,
    output_names,
)
from contract.validation import canonical_weight, validate_model

MODEL_PATHS = sorted(MODELS_DIR.glob("*/*/model.onnx"))
MIN_TEST_ACCURACY = {"cnn": 0.994, "lenet": 0.99}
FRAMEWORK_FLATTEN_ORDER = {"pytorch": "CHW", "tensorflow": "HWC"}


def model_id(path: Path) -> str:
    return f"{path.parent.parent.name}/{path.parent.name}"


def load(path: Path) -> onnx.ModelProto:
    return onnx.load(path)


def props(model: onnx.ModelProto) -> dict[str, str]:
    return {prop.key: prop.value for prop in model.metadata_props}


def dims(value_info: onnx.ValueInfoProto) -> list[int | str]:
    return [dim.dim_value if dim.HasField("dim_value") else dim.dim_param for dim in value_info.type.tensor_type.shape.dim]


def canonical_weight_shapes(layers: tuple[LayerSpec, ...]) -> dict[str, tuple[int, ...]]:
    """conv: [out, in, k, k]; dense: [out, in], following the input shape through the layer list."""
    shapes: dict[str, tuple[int, ...]] = {}
    previous: tuple[int, ...] = (1, 28, 28)
    for layer in layers:
        if layer.kind == "conv":
            shapes[layer.name] = (layer.channels, previous[0], layer.kernel, layer.kernel)
        elif layer.kind == "dense":
            shapes[layer.name] = (layer.shape[0], previous[0])
        previous = layer.shape
    return shapes


def test_committed_models_exist() -> None:
    assert MODEL_PATHS, f"no models/*/*/model.onnx under {MODELS_DIR}"
    names = {path.parent.parent.name for path in MODEL_PATHS}
    assert {"cnn-pytorch", "cnn-tensorflow", "lenet-pytorch", "lenet-tensorflow"} <= names


@pytest.mark.parametrize("path", MODEL_PATHS, ids=model_id)
def test_model_follows_the_contract(path: Path) -> None:
    onnx.checker.check_model(str(path))
    model = load(path)
    validated = validate_model(model)
    metadata = validated.metadata
    assert path.parent.name.isdigit()
    assert path.parent.parent.name == metadata.model_name  # <architecture>-<framework>[-int8]
    assert metadata.flatten_order == FRAMEWORK_FLATTEN_ORDER[metadata.framework]

    initializers = {init.name for init in model.graph.initializer}
    (image,) = [inp for inp in model.graph.input if inp.name not in initializers]
    assert image.name == INPUT_NAME
    assert image.type.tensor_type.elem_type == TensorProto.FLOAT
    image_dims = dims(image)
    assert isinstance(image_dims[0], str) and image_dims[0] and image_dims[1:] == [1, 28, 28]

    layers = ARCHITECTURES[metadata.architecture]
    expected_shapes = {LOGITS: (10,), PROBABILITIES: (10,)} | {layer.name: layer.shape for layer in layers}
    assert [out.name for out in model.graph.output] == [LOGITS, PROBABILITIES, *(layer.name for layer in layers)]
    for output in model.graph.output:
        assert output.type.tensor_type.elem_type == TensorProto.FLOAT, output.name
        output_dims = dims(output)
        assert isinstance(output_dims[0], str), output.name
        assert tuple(output_dims[1:]) == expected_shapes[output.name], output.name


@pytest.mark.parametrize("path", MODEL_PATHS, ids=model_id)
def test_model_metadata_is_complete(path: Path) -> None:
    model = load(path)
    metadata_props = props(model)
    assert [key for key in REQUIRED_METADATA if key not in metadata_props] == []
    metadata = validate_model(model).metadata
    layers = ARCHITECTURES[metadata.architecture]

    assert json.loads(metadata_props["layers"]) == [layer.public() for layer in layers]
    accuracy = metadata.test_accuracy
    assert accuracy >= MIN_TEST_ACCURACY[metadata.architecture], f"{model_id(path)}: test accuracy {accuracy}"
    assert 0 < metadata.test_loss < 0.1
    assert metadata.training["test_images"] == 10_000
    assert len(metadata.per_class_accuracy) == 10
    assert len(metadata.data_sha256) == 64
    assert metadata.framework_version


@pytest.mark.parametrize("path", MODEL_PATHS, ids=model_id)
def test_model_weights_are_named_and_shaped(path: Path) -> None:
    model = load(path)
    metadata = validate_model(model).metadata
    layers = ARCHITECTURES[metadata.architecture]
    arrays = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    expected = canonical_weight_shapes(layers)

    assert sorted(metadata.weights) == sorted(expected)
    for layer_name, shape in expected.items():
        entry = metadata.weights[layer_name]
        assert entry["weight"] == f"{layer_name}.weight" and entry["bias"] == f"{layer_name}.bias"
        assert entry["layout"] in (("OIHW", "HWIO") if len(shape) == 4 else ("out_in", "in_out"))
        assert canonical_weight(arrays[entry["weight"]], entry["layout"]).shape == shape
        assert arrays[entry["bias"]].shape == (shape[0],)


@pytest.mark.parametrize("path", MODEL_PATHS, ids=model_id)
def test_model_runs_with_the_declared_output_shapes(path: Path, mnist_test_set: tuple[np.ndarray, np.ndarray]) -> None:
    images, labels = mnist_test_set
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    batch = (images[:8].astype(np.float32) / 255.0)[:, None]
    names = [out.name for out in session.get_outputs()]
    results = dict(zip(names, session.run(names, {INPUT_NAME: batch})))
    architecture = props(load(path))["architecture"]

    for layer in ARCHITECTURES[architecture]:
        assert results[layer.name].shape == (8, *layer.shape), layer.name
    np.testing.assert_allclose(results[PROBABILITIES].sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(results[LOGITS], results["fc2"])
    assert (results[PROBABILITIES].argmax(axis=1) == labels[:8]).all()


def models_by_architecture() -> dict[str, dict[str, Path]]:
    found: dict[str, dict[str, Path]] = {}
    for path in MODEL_PATHS:
        architecture, _, framework = path.parent.parent.name.partition("-")
        found.setdefault(architecture, {})[framework] = path  # sorted paths: the last is the highest version
    return found


def framework_pairs() -> list[tuple[Path, Path]]:
    return [(pair["pytorch"], pair["tensorflow"]) for pair in models_by_architecture().values()
            if {"pytorch", "tensorflow"} <= set(pair)]


def test_both_frameworks_have_every_architecture() -> None:
    assert {arch for arch, pair in models_by_architecture().items() if {"pytorch", "tensorflow"} <= set(pair)} == set(ARCHITECTURES)


@pytest.mark.parametrize("pair", framework_pairs(), ids=lambda pair: pair[0].parent.parent.name.split("-")[0])
def test_frameworks_are_interchangeable(pair: tuple[Path, Path]) -> None:
    pytorch_model, tensorflow_model = (load(path) for path in pair)

    def signature(model: onnx.ModelProto) -> list[tuple[str, int, int, tuple]]:
        initializers = {init.name for init in model.graph.initializer}
        inputs = [inp for inp in model.graph.input if inp.name not in initializers]
        return [(value.name, value.type.tensor_type.elem_type, len(dims(value)), tuple(dims(value)[1:]))
                for value in [*inputs, *model.graph.output]]

    assert signature(pytorch_model) == signature(tensorflow_model)
    assert props(pytorch_model)["layers"] == props(tensorflow_model)["layers"]
    assert props(pytorch_model)["architecture"] == props(tensorflow_model)["architecture"]
    assert props(pytorch_model)["framework"] == "pytorch" and props(tensorflow_model)["framework"] == "tensorflow"
    assert sorted(json.loads(props(pytorch_model)["weights"])) == sorted(json.loads(props(tensorflow_model)["weights"]))


# Negative tests: a committed model, copied and broken in memory.


def rename_output(model: onnx.ModelProto) -> None:
    old, new = model.graph.output[0].name, "scores"
    for node in model.graph.node:
        node.output[:] = [new if name == old else name for name in node.output]
    model.graph.output[0].name = new


def widen_input(model: onnx.ModelProto) -> None:
    image = next(inp for inp in model.graph.input if inp.name == INPUT_NAME)
    image.type.tensor_type.shape.dim[2].dim_value = 32


def fix_batch_size(model: onnx.ModelProto) -> None:
    image = next(inp for inp in model.graph.input if inp.name == INPUT_NAME)
    image.type.tensor_type.shape.dim[0].dim_value = 1


def make_input_double(model: onnx.ModelProto) -> None:
    next(inp for inp in model.graph.input if inp.name == INPUT_NAME).type.tensor_type.elem_type = TensorProto.DOUBLE


def drop_metadata(key: str) -> Callable[[onnx.ModelProto], None]:
    def edit(model: onnx.ModelProto) -> None:
        kept = [(prop.key, prop.value) for prop in model.metadata_props if prop.key != key]
        del model.metadata_props[:]
        onnx.helper.set_model_props(model, dict(kept))

    return edit


def set_metadata(key: str, value: str) -> Callable[[onnx.ModelProto], None]:
    def edit(model: onnx.ModelProto) -> None:
        next(prop for prop in model.metadata_props if prop.key == key).value = value

    return edit


def drop_last_output(model: onnx.ModelProto) -> None:
    del model.graph.output[-1]


def shrink_layer_output(model: onnx.ModelProto) -> None:
    model.graph.output[2].type.tensor_type.shape.dim[1].dim_value += 1


def point_weight_elsewhere(model: onnx.ModelProto) -> None:
    weights = json.loads(props(model)["weights"])
    weights["conv1"]["weight"] = "missing.weight"
    set_metadata("weights", json.dumps(weights))(model)


BREAKAGES: dict[str, tuple[Callable[[onnx.ModelProto], None], str]] = {
    "renamed-output": (rename_output, "outputs are"),
    "dropped-output": (drop_last_output, "outputs are"),
    "wrong-layer-shape": (shrink_layer_output, "has shape"),
    "wrong-input-shape": (widen_input, "input 'image' has shape"),
    "fixed-batch": (fix_batch_size, "input 'image' has shape"),
    "double-input": (make_input_double, "float32"),
    "no-test-accuracy": (drop_metadata("test_accuracy"), "missing test_accuracy"),
    "no-layers": (drop_metadata("layers"), "missing layers"),
    "no-weights": (drop_metadata("weights"), "missing weights"),
    "bad-accuracy": (set_metadata("test_accuracy", "high"), "malformed"),
    "unknown-architecture": (set_metadata("architecture", "resnet"), "unknown architecture"),
    "future-contract": (set_metadata("contract_version", "99"), "contract version 99"),
    "wrong-layer-list": (set_metadata("layers", "[]"), "layer list"),
    "missing-weight": (point_weight_elsewhere, "no weight initializer"),
}


@pytest.fixture(scope="module")
def committed_model() -> onnx.ModelProto:
    assert MODEL_PATHS, f"no models/*/*/model.onnx under {MODELS_DIR}"
    return load(MODEL_PATHS[0])


def test_unbroken_copy_is_accepted(committed_model: onnx.ModelProto) -> None:
    copy = onnx.ModelProto()
    copy.CopyFrom(committed_model)
    assert validate_model(copy).outputs == tuple(output_names(props(copy)["architecture"]))


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_validate_model_rejects_broken_models(committed_model: onnx.ModelProto, breakage: str) -> None:
    edit, message = BREAKAGES[breakage]
    broken = onnx.ModelProto()
    broken.CopyFrom(committed_model)
    edit(broken)
    with pytest.raises(ContractError, match=message):
        validate_model(broken)
