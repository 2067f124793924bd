"""INT8 variants: quantizing a committed model on a small calibration set, the contract accepting
the result and refusing broken copies, dequantized weights, float activations, and a real server."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from contract.spec import ARCHITECTURES, INPUT_NAME, LOGITS, PROBABILITIES, ContractError
from contract.validation import layer_weights, validate_model
from service.cli import main as cli_main
from tests.conftest import MODELS_DIR, ServerProcess, latest_version, mnist_dir, start_server
from training import quantize
from training.common import to_input
from training.quantize import MAX_LAYER_ERROR, QuantizeSettings, quantize_model, run
from training.quantize_speed import compare_speed, profile_operators

SOURCES = ["lenet-pytorch", "lenet-tensorflow"]  # small; tf2onnx's MatMul + Add dense layers on one side
QUICK = QuantizeSettings(calibration_images=200, test_limit=1000, max_accuracy_drop=0.005)


@pytest.fixture(scope="module")
def quantized(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("int8-models")
    return {name: run(MODELS_DIR / name, out, mnist_dir(), QUICK) for name in SOURCES}


def source_file(name: str) -> Path:
    return MODELS_DIR / name / str(latest_version(name)) / "model.onnx"


def run_all(model: onnx.ModelProto | Path, images: np.ndarray, optimize: bool = True) -> dict[str, np.ndarray]:
    options = ort.SessionOptions()
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    content = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    session = ort.InferenceSession(content, options, providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    return dict(zip(names, session.run(names, {INPUT_NAME: to_input(images)})))


def initializers(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}


@pytest.mark.parametrize("name", SOURCES)
def test_quantized_model_follows_the_contract_and_says_what_it_is(quantized: dict[str, Path], name: str) -> None:
    path = quantized[name]
    onnx.checker.check_model(str(path))
    metadata = validate_model(onnx.load(path)).metadata
    source = onnx.load(source_file(name))
    source_meta = validate_model(source).metadata

    assert path.parent.parent.name == f"{name}-int8" == metadata.model_name and path.parent.name == "1"
    assert metadata.quantized and metadata.framework == source_meta.framework
    assert metadata.quantization["format"] == "QDQ"
    assert metadata.quantization["source"]["name"] == name
    assert metadata.quantization["source"]["version"] == latest_version(name)
    assert metadata.quantization["source"]["sha256"] == hashlib.sha256(source_file(name).read_bytes()).hexdigest()
    assert metadata.quantization["calibration"] | {"images": 200, "split": "MNIST training images"} == \
        metadata.quantization["calibration"]
    assert metadata.training["test_images"] == 1000 and len(metadata.per_class_accuracy) == 10
    assert metadata.test_accuracy >= metadata.quantization["source"]["test_accuracy"] - QUICK.max_accuracy_drop
    assert max(metadata.quantization["layer_error"].values()) <= MAX_LAYER_ERROR
    assert path.stat().st_size < 0.4 * source_file(name).stat().st_size


@pytest.mark.parametrize("name", SOURCES)
def test_weights_are_integers_with_a_scale_per_output_channel(quantized: dict[str, Path], name: str) -> None:
    model = onnx.load(quantized[name])
    metadata = validate_model(model).metadata
    arrays = initializers(model)
    assert metadata.quantization["float_layers"] == []
    for layer, entry in metadata.weights.items():
        assert entry["weight"] == f"{layer}.weight" and entry["bias"] == f"{layer}.bias"
        weight, bias = arrays[entry["weight"]], arrays[entry["bias"]]
        assert weight.dtype == np.int8 and bias.dtype == np.int32
        assert arrays[entry["weight_scale"]].dtype == np.float32
        assert arrays[entry["weight_scale"]].shape == arrays[entry["weight_zero_point"]].shape == bias.shape


@pytest.mark.parametrize("name", SOURCES)
def test_layer_weights_are_the_source_weights_within_half_a_step(quantized: dict[str, Path], name: str) -> None:
    model = onnx.load(quantized[name])
    metadata = validate_model(model).metadata
    arrays = initializers(model)
    source_model = onnx.load(source_file(name))
    served, source = layer_weights(model, metadata), layer_weights(source_model, validate_model(source_model).metadata)
    assert sorted(served) == sorted(source)
    for layer, entry in metadata.weights.items():
        for role in ("weight", "bias"):
            value, reference = served[layer][role], source[layer][role]
            assert value.dtype == np.float32 and value.shape == reference.shape, (layer, role)
            half_step = arrays[entry[f"{role}_scale"]].reshape((-1,) + (1,) * (value.ndim - 1)) / 2
            assert (np.abs(value - reference) <= half_step * 1.0001 + 1e-7).all(), (layer, role)


@pytest.mark.parametrize("name", SOURCES)
def test_layer_weights_equal_what_the_graph_dequantizes(quantized: dict[str, Path], name: str) -> None:
    """layer_weights computes what the model's own DequantizeLinear nodes compute, bit for bit."""
    model = onnx.load(quantized[name])
    metadata = validate_model(model).metadata
    served = layer_weights(model, metadata)
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    for entry in metadata.weights.values():
        for role in ("weight", "bias"):
            dequantized = helper.make_tensor_value_info(f"{entry[role]}_dequantized", TensorProto.FLOAT, None)
            probe.graph.output.append(dequantized)
    graph_values = run_all(probe, np.zeros((1, 28, 28), np.uint8), optimize=False)
    for layer, entry in metadata.weights.items():
        canonical = {"HWIO": (3, 2, 0, 1), "in_out": (1, 0)}.get(entry["layout"])
        weight = graph_values[f"{entry['weight']}_dequantized"]
        np.testing.assert_array_equal(served[layer]["weight"], weight.transpose(canonical) if canonical else weight)
        np.testing.assert_array_equal(served[layer]["bias"], graph_values[f"{entry['bias']}_dequantized"])


@pytest.mark.parametrize("name", SOURCES)
def test_served_activations_are_float_close_to_the_source_and_keep_their_sign(
        quantized: dict[str, Path], name: str, mnist_test_set: tuple[np.ndarray, np.ndarray]) -> None:
    images, labels = mnist_test_set
    served, reference = run_all(quantized[name], images[:64]), run_all(source_file(name), images[:64])
    kinds = {layer.name: layer.kind for layer in ARCHITECTURES["lenet"]}
    assert list(served) == list(reference)
    for output, value in served.items():
        assert value.dtype == np.float32 and value.shape == reference[output].shape, output
        error = np.sqrt(np.mean(np.square(value - reference[output]))) / np.sqrt(np.mean(np.square(reference[output])))
        assert error <= MAX_LAYER_ERROR, output
        if kinds.get(output) in ("conv", "dense"):  # before the relu: negative values survive quantization
            assert value.min() < 0 and reference[output].min() < 0, output
        if kinds.get(output) == "relu":
            assert value.min() == 0, output
    np.testing.assert_allclose(served[PROBABILITIES].sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(served[LOGITS], served["fc2"])
    assert (served[PROBABILITIES].argmax(axis=1) == labels[:64]).mean() >= 0.95


def test_the_layer_check_refuses_conv_outputs_clipped_at_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    """With Relu quantized as it is, ONNX Runtime's quantizer gives conv1 relu1's range (from 0); the
    comparison with the float model catches it before anything is written."""
    monkeypatch.setattr(quantize, "relu_as_leaky_relu", lambda model: None)
    monkeypatch.setattr(quantize, "QUANTIZED_OPS", [*quantize.QUANTIZED_OPS, "Relu"])
    with pytest.raises(ContractError, match=r"output 'conv\d' is off the float model's by"):
        quantize_model(MODELS_DIR / "lenet-pytorch", mnist_dir(), QUICK)


def test_quantize_refuses_an_int8_source_a_large_accuracy_drop_and_an_empty_calibration(
        quantized: dict[str, Path]) -> None:
    with pytest.raises(ContractError, match="already quantized"):
        quantize_model(quantized["lenet-pytorch"], mnist_dir(), QUICK)
    with pytest.raises(ContractError, match="below the float model's"):
        quantize_model(MODELS_DIR / "lenet-pytorch", mnist_dir(),
                       QuantizeSettings(calibration_images=50, test_limit=200, max_accuracy_drop=-1.0))
    with pytest.raises(ValueError, match="calibration needs 1 to 60000 images"):
        quantize_model(MODELS_DIR / "lenet-pytorch", mnist_dir(), QuantizeSettings(calibration_images=0))


# Broken copies of a quantized model: validate_model names what is wrong.


def set_metadata(key: str, change: Callable[[object], object]) -> Callable[[onnx.ModelProto], None]:
    def edit(model: onnx.ModelProto) -> None:
        prop = next(prop for prop in model.metadata_props if prop.key == key)
        prop.value = json.dumps(change(json.loads(prop.value)))

    return edit


def drop_metadata(key: str) -> Callable[[onnx.ModelProto], None]:
    def edit(model: onnx.ModelProto) -> None:
        kept = [prop for prop in model.metadata_props if prop.key != key]
        del model.metadata_props[:]
        model.metadata_props.extend(kept)

    return edit


def replace_initializer(name: str, value: np.ndarray) -> Callable[[onnx.ModelProto], None]:
    def edit(model: onnx.ModelProto) -> None:
        init = next(init for init in model.graph.initializer if init.name == name)
        init.CopyFrom(numpy_helper.from_array(value, name))

    return edit


def without_key(mapping: object, *path: str) -> object:
    copy = json.loads(json.dumps(mapping))
    inner = copy
    for key in path[:-1]:
        inner = inner[key]
    del inner[path[-1]]
    return copy


QUANTIZED_BREAKAGES: dict[str, tuple[Callable[[onnx.ModelProto], None], str]] = {
    "quantization-not-an-object": (set_metadata("quantization", lambda value: [value]), "must be a JSON object"),
    "no-source-digest": (set_metadata("quantization", lambda value: without_key(value, "source", "sha256")),
                         "missing source.sha256"),
    "no-calibration": (set_metadata("quantization", lambda value: without_key(value, "calibration")),
                       "missing calibration"),
    "scale-not-named": (set_metadata("weights", lambda value: without_key(value, "conv2", "weight_scale")),
                        "no weight_scale initializer"),
    "all-scales-dropped": (set_metadata("weights", lambda value: {**value, "fc1": {
        key: name for key, name in value["fc1"].items() if not key.endswith(("_scale", "_zero_point"))}}),
                           "not float32 and the metadata names no weight_scale"),
    "scales-without-quantization": (drop_metadata("quantization"),
                                    "is quantized but the metadata has no 'quantization'"),
    "scale-missing": (set_metadata("weights",
                                   lambda value: {**value, "fc1": {**value["fc1"], "bias_scale": "nowhere"}}),
                      "no bias_scale initializer"),
    "three-scales-for-fifty-channels": (replace_initializer("conv2.weight_scale", np.ones(3, np.float32)),
                                        "one per each of its 50 output channels"),
    "float-bias": (replace_initializer("fc2.bias", np.zeros(10, np.float32)), "must be int32"),
    "int32-weight": (replace_initializer("fc2.weight", np.zeros((10, 500), np.int32)), "must be int8 or uint8"),
    "float-zero-point": (replace_initializer("conv2.weight_zero_point", np.zeros(50, np.float32)),
                         "zero_point of the weight's type"),
}


@pytest.mark.parametrize("breakage", sorted(QUANTIZED_BREAKAGES))
def test_validate_model_refuses_broken_quantized_models(quantized: dict[str, Path], breakage: str) -> None:
    edit, message = QUANTIZED_BREAKAGES[breakage]
    model = onnx.load(quantized["lenet-pytorch"])
    validate_model(model)
    edit(model)
    with pytest.raises(ContractError, match=message):
        validate_model(model)


def test_the_cli_quantizes_with_a_float_layer_and_refuses_in_one_line(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    common = ["--out", str(tmp_path), "--calibration-images", "100", "--test-limit", "500",
              "--max-accuracy-drop", "0.01", "--data-dir", str(mnist_dir())]
    source = MODELS_DIR / "lenet-tensorflow"
    arguments = ["quantize", "--source", str(source), "--float-layers", "conv1", "--speed-rounds", "1", "--profile"]
    assert cli_main([*arguments, "--threads", "1", *common]) == 0
    (summary,) = json.loads(capsys.readouterr().out)
    assert summary["path"] == str(tmp_path / "lenet-tensorflow-int8" / "1" / "model.onnx")
    assert summary["calibration"]["images"] == 100 and summary["source"]["name"] == "lenet-tensorflow"
    assert set(summary["speed"]["models"]) == set(summary["profile"]) == {"float", "int8"}
    assert "QLinearConv" in summary["profile"]["int8"] and "QLinearConv" not in summary["profile"]["float"]

    model = onnx.load(summary["path"])
    metadata = validate_model(model).metadata
    assert metadata.quantization["float_layers"] == ["conv1"]
    assert "weight_scale" not in metadata.weights["conv1"] and "weight_scale" in metadata.weights["conv2"]
    arrays = initializers(model)
    assert arrays["conv1.weight"].dtype == arrays["conv1.bias"].dtype == np.float32
    source_model = onnx.load(source_file("lenet-tensorflow"))
    np.testing.assert_array_equal(layer_weights(model, metadata)["conv1"]["weight"],
                                  layer_weights(source_model, validate_model(source_model).metadata)["conv1"]["weight"])

    assert cli_main(["quantize", "--source", str(tmp_path / "no-such-model"), *common]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("mnist-serve quantize:") and "no such model" in error[0]


def test_int8_runs_integer_kernels_and_is_timed_beside_the_float_model(
        quantized: dict[str, Path], mnist_test_set: tuple[np.ndarray, np.ndarray]) -> None:
    operators = profile_operators(quantized["lenet-pytorch"], mnist_test_set[0][:32], runs=2, threads=1)
    # lenet: conv1, conv2, fc1 and fc2 on 8-bit integers
    assert operators["QLinearConv"]["nodes"] == 2 and operators["QGemm"]["nodes"] == 2
    assert not {"Conv", "FusedConv", "Gemm", "FusedGemm"} & set(operators)
    assert sum(entry["share"] for entry in operators.values()) == pytest.approx(1.0, abs=0.01)

    speed = compare_speed({"float": source_file("lenet-pytorch"), "int8": quantized["lenet-pytorch"]},
                          mnist_test_set[0], rounds=1, batch_size=16, repeats=1, threads=1)
    for label in ("float", "int8"):
        measured = speed["models"][label]
        assert measured["images_per_s"] > 0 and measured["images_per_s_all_outputs"] > 0
        assert measured["latency_ms_batch_1"] > 0


# A real server with an int8 model beside its source.


@pytest.fixture(scope="module")
def int8_server(quantized: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("int8-server")
    served = {"lenet-pytorch-int8": quantized["lenet-pytorch"], "lenet-pytorch": source_file("lenet-pytorch")}
    for name, path in served.items():
        (root / "models" / name / "1").mkdir(parents=True)
        shutil.copyfile(path, root / "models" / name / "1" / "model.onnx")
    server = start_server(root, {"MNIST_SERVE_MODELS_DIR": str(root / "models"), "MNIST_SERVE_THREADS": "1",
                                 "MNIST_SERVE_MAX_BATCH_SIZE": "16", "MNIST_SERVE_DEFAULT_MODEL": "lenet-pytorch-int8"})
    yield server
    server.stop()


def test_server_lists_and_predicts_with_the_int8_model(int8_server: ServerProcess, quantized: dict[str, Path],
                                                       mnist_test_set: tuple[np.ndarray, np.ndarray]) -> None:
    images, labels = mnist_test_set
    metadata = validate_model(onnx.load(quantized["lenet-pytorch"])).metadata
    listing = httpx.get(f"{int8_server.url}/v1/models", timeout=30).json()
    served = {model["name"]: model for model in listing["models"]}
    assert set(served) == {"lenet-pytorch", "lenet-pytorch-int8"}
    assert served["lenet-pytorch-int8"]["test_accuracy"] == metadata.test_accuracy

    response = httpx.post(f"{int8_server.url}/v1/predict", json={"images": images[:8].tolist()}, timeout=30)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "lenet-pytorch-int8"
    expected = run_all(quantized["lenet-pytorch"], images[:8])[PROBABILITIES]
    for prediction, label, row in zip(body["predictions"], labels[:8], expected):
        assert prediction["label"] == label
        np.testing.assert_allclose(prediction["probabilities"], row, atol=1e-4)


def test_server_answers_v2_infer_with_float_activations(int8_server: ServerProcess, quantized: dict[str, Path],
                                                        mnist_test_set: tuple[np.ndarray, np.ndarray]) -> None:
    batch = to_input(mnist_test_set[0][:4])
    image = {"name": INPUT_NAME, "datatype": "FP32", "shape": list(batch.shape), "data": batch.ravel().tolist()}
    request = {"inputs": [image],
               "outputs": [{"name": "conv2"}, {"name": "relu3"}, {"name": PROBABILITIES}]}
    response = httpx.post(f"{int8_server.url}/v2/models/lenet-pytorch-int8/infer", json=request, timeout=30)
    assert response.status_code == 200, response.text
    outputs = {output["name"]: output for output in response.json()["outputs"]}
    expected = run_all(quantized["lenet-pytorch"], mnist_test_set[0][:4])
    for name in ("conv2", "relu3", PROBABILITIES):
        assert outputs[name]["datatype"] == "FP32"
        value = np.array(outputs[name]["data"], np.float32).reshape(outputs[name]["shape"])
        np.testing.assert_allclose(value, expected[name], rtol=1e-5, atol=1e-5)
    assert min(outputs["conv2"]["data"]) < 0  # an int8 convolution's output, signed


def test_server_serves_dequantized_weights(int8_server: ServerProcess, quantized: dict[str, Path]) -> None:
    model = onnx.load(quantized["lenet-pytorch"])
    expected = layer_weights(model, validate_model(model).metadata)
    for layer in ("conv1", "fc1"):
        body = httpx.get(f"{int8_server.url}/v1/models/lenet-pytorch-int8/layers/{layer}/weights?encoding=base64",
                         timeout=30).json()
        weight = np.frombuffer(base64.b64decode(body["weight"]["data"]["data"]), "<f4").reshape(body["weight"]["shape"])
        bias = np.frombuffer(base64.b64decode(body["bias"]["data"]["data"]), "<f4")
        np.testing.assert_array_equal(weight, expected[layer]["weight"])
        np.testing.assert_array_equal(bias, expected[layer]["bias"])
