"""TensorFlow/Keras: a short run learns and writes a valid model; the tf2onnx export is verified."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from tests.conftest import mnist_dir
from training import data, tf_train
from training.common import Splits, TrainSettings, load_splits, onnx_predict, to_input
from contract.metadata import ModelMetadata
from contract.spec import LOGITS, PROBABILITIES, output_names
from contract.validation import canonical_weight, validate_model
from training.export import ExportMismatch, verify_export

# imported after training.tf_train, which quiets TensorFlow's C++ logging before TensorFlow loads
import keras
import tensorflow as tf

SETTINGS = TrainSettings(architecture="lenet", epochs=2, train_limit=2000, test_limit=300, validation_size=500, seed=1)
EXPORT_SAMPLES = 32


def blank_metadata(architecture: str) -> ModelMetadata:
    return ModelMetadata(framework="tensorflow", framework_version=tf.__version__, architecture=architecture,
                         flatten_order="HWC", test_accuracy=0.0, test_loss=0.0, training={},
                         data_sha256="0" * 64, created="2026-01-01T00:00:00+00:00")


def reference_outputs(inference_model: keras.Model, architecture: str, images: np.ndarray) -> dict[str, np.ndarray]:
    """Keras's own outputs under the contract's names (fc2 doubles as the logits)."""
    keras_names = [PROBABILITIES, *(name for name in output_names(architecture)[2:])]
    outputs = dict(zip(keras_names, (np.asarray(t) for t in inference_model(to_input(images), training=False))))
    return {LOGITS: outputs["fc2"], **outputs}


@pytest.fixture(scope="module")
def splits() -> Splits:
    return load_splits(SETTINGS, mnist_dir())


@pytest.fixture(scope="module")
def written_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tf-run")
    return tf_train.run(SETTINGS, mnist_dir(), root / "models", root / "reports", progress=False)


@pytest.fixture(scope="module")
def untrained_cnn() -> keras.Model:
    """Freshly initialised, but with random biases: tf2onnx drops an all-zero bias from the graph."""
    keras.utils.set_random_seed(0)
    inference_model = tf_train.build_models("cnn")[1]
    rng = np.random.default_rng(0)
    for layer in inference_model.layers:
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)):
            kernel, bias = layer.get_weights()
            layer.set_weights([kernel, rng.normal(0, 0.05, bias.shape).astype(np.float32)])
    return inference_model


@pytest.fixture(scope="module")
def exported_cnn(untrained_cnn: keras.Model, splits: Splits) -> onnx.ModelProto:
    return tf_train.export(untrained_cnn, blank_metadata("cnn"), splits.test_images[:EXPORT_SAMPLES])


def test_run_writes_a_versioned_model_with_metadata(written_model: Path, splits: Splits) -> None:
    assert written_model.relative_to(written_model.parents[2]) == Path("lenet-tensorflow/1/model.onnx")
    model = onnx.load(written_model)
    metadata = validate_model(model).metadata
    assert (metadata.framework, metadata.architecture, metadata.flatten_order) == ("tensorflow", "lenet", "HWC")
    assert metadata.framework_version == tf.__version__
    assert metadata.training["keras_version"] == keras.__version__
    assert metadata.training["test_images"] == SETTINGS.test_limit
    assert metadata.data_sha256 == data.dataset_sha256(mnist_dir())

    _, probabilities = onnx_predict(model, splits.test_images)
    assert metadata.test_accuracy == pytest.approx(float(np.mean(probabilities.argmax(1) == splits.test_labels)))
    assert metadata.test_accuracy > 0.7
    report = written_model.parents[3] / "reports" / "lenet-tensorflow"
    assert {p.name for p in report.iterdir()} >= {"confusion_matrix.png", "confident_errors.png", "evaluation.json", "metadata.json"}


def test_training_lowers_the_loss(written_model: Path) -> None:
    history = validate_model(onnx.load(written_model)).metadata.training["history"]

    assert [record["epoch"] for record in history] == [1, 2]
    assert history[1]["train_loss"] < history[0]["train_loss"]
    assert history[1]["val_loss"] < history[0]["val_loss"]
    assert history[1]["val_loss"] < 0.6 * np.log(10)  # an untrained classifier scores about ln(10)
    assert history[1]["val_accuracy"] > 0.7


def test_cnn_export_is_verified_and_follows_the_contract(
    exported_cnn: onnx.ModelProto, untrained_cnn: keras.Model, splits: Splits
) -> None:
    validated = validate_model(exported_cnn)
    assert validated.outputs == tuple(output_names("cnn"))
    assert validated.metadata.flatten_order == "HWC"

    arrays = {init.name: numpy_helper.to_array(init) for init in exported_cnn.graph.initializer}
    for layer_name in ("conv1", "fc1"):
        entry = validated.metadata.weights[layer_name]
        kernel, bias = untrained_cnn.get_layer(layer_name).get_weights()
        expected = kernel.transpose(3, 2, 0, 1) if kernel.ndim == 4 else kernel.T
        np.testing.assert_array_equal(canonical_weight(arrays[entry["weight"]], entry["layout"]), expected)
        np.testing.assert_array_equal(arrays[entry["bias"]], bias)

    images = splits.test_images[:EXPORT_SAMPLES]
    errors = verify_export(exported_cnn, to_input(images), reference_outputs(untrained_cnn, "cnn", images))
    assert max(errors.values()) <= 1e-4


def test_verify_export_rejects_perturbed_reference_outputs(
    exported_cnn: onnx.ModelProto, untrained_cnn: keras.Model, splits: Splits
) -> None:
    images = splits.test_images[:EXPORT_SAMPLES]
    reference = reference_outputs(untrained_cnn, "cnn", images)
    reference["relu3"] = reference["relu3"] * 1.01

    with pytest.raises(ExportMismatch, match="relu3="):
        verify_export(exported_cnn, to_input(images), reference)


def test_verify_export_catches_a_graph_with_wrong_weights(
    exported_cnn: onnx.ModelProto, untrained_cnn: keras.Model, splits: Splits
) -> None:
    broken = onnx.ModelProto()
    broken.CopyFrom(exported_cnn)
    kernel = next(init for init in broken.graph.initializer if init.name == "conv4.weight")
    kernel.CopyFrom(numpy_helper.from_array(-numpy_helper.to_array(kernel), name="conv4.weight"))
    images = splits.test_images[:EXPORT_SAMPLES]

    with pytest.raises(ExportMismatch, match="conv4="):
        verify_export(broken, to_input(images), reference_outputs(untrained_cnn, "cnn", images))

