"""PyTorch: a short training run learns, the export is verified and valid, run() writes a model."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from torch.utils.data import DataLoader, TensorDataset

from tests.conftest import mnist_dir
from training import data, torch_train
from training.common import Splits, TrainSettings, load_splits, onnx_predict, to_input, write_model
from contract.metadata import ModelMetadata
from contract.spec import PROBABILITIES, output_names
from contract.validation import validate_model
from training.export import compare_outputs, ExportMismatch, verify_export
from training.torch_train import ContractNet

SETTINGS = TrainSettings(architecture="lenet", epochs=2, train_limit=2000, test_limit=300, validation_size=500, seed=1)
RUN_SETTINGS = TrainSettings(architecture="lenet", epochs=1, train_limit=1000, test_limit=300, validation_size=200, seed=2)
EXPORT_SAMPLES = 64


def blank_metadata(architecture: str) -> ModelMetadata:
    return ModelMetadata(framework="pytorch", framework_version=torch.__version__, architecture=architecture,
                         flatten_order="CHW", test_accuracy=0.0, test_loss=0.0, training={},
                         data_sha256="0" * 64, created="2026-01-01T00:00:00+00:00")


def reference_outputs(model: ContractNet, images: np.ndarray) -> dict[str, np.ndarray]:
    model.eval()
    with torch.no_grad():
        outputs = model.forward_all(torch.from_numpy(to_input(images)))
    return {name: tensor.numpy() for name, tensor in zip(output_names(model.architecture), outputs)}


def validation_loss(model: ContractNet, splits: Splits) -> tuple[float, float]:
    dataset = TensorDataset(torch.from_numpy(to_input(splits.val_images)), torch.from_numpy(splits.val_labels.astype(np.int64)))
    return torch_train.test_epoch(model, DataLoader(dataset, batch_size=500))


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Tiny models train fastest on one thread, and the suite shares its cores; restored afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def splits() -> Splits:
    return load_splits(SETTINGS, mnist_dir())


@pytest.fixture(scope="module")
def trained(splits: Splits) -> tuple[ContractNet, list[dict[str, float]]]:
    return torch_train.train(SETTINGS, splits, progress=False)


@pytest.fixture(scope="module")
def exported(trained: tuple[ContractNet, list[dict[str, float]]], splits: Splits) -> onnx.ModelProto:
    return torch_train.export(trained[0], blank_metadata("lenet"), splits.test_images[:EXPORT_SAMPLES])


def test_training_lowers_the_loss(trained: tuple[ContractNet, list[dict[str, float]]], splits: Splits) -> None:
    torch.manual_seed(SETTINGS.seed)
    initial_loss, initial_accuracy = validation_loss(ContractNet("lenet"), splits)
    model, history = trained
    final_loss, final_accuracy = validation_loss(model, splits)

    assert [record["epoch"] for record in history] == [1, 2]
    assert history[1]["train_loss"] < history[0]["train_loss"]
    assert final_loss < 0.6 * initial_loss
    assert final_accuracy > max(0.7, initial_accuracy + 0.4)
    assert final_accuracy == pytest.approx(max(record["val_accuracy"] for record in history))


def test_export_is_verified_and_follows_the_contract(
    exported: onnx.ModelProto, trained: tuple[ContractNet, list[dict[str, float]]], splits: Splits
) -> None:
    validated = validate_model(exported)
    assert validated.metadata.weights["conv1"] == {"weight": "conv1.weight", "bias": "conv1.bias", "layout": "OIHW"}
    assert validated.metadata.weights["fc1"]["layout"] == "out_in"
    arrays = {init.name: numpy_helper.to_array(init) for init in exported.graph.initializer}
    np.testing.assert_array_equal(arrays["fc2.weight"], trained[0].layers["fc2"].weight.detach().numpy())

    images = splits.test_images
    _, onnx_probabilities = onnx_predict(exported, images)
    torch_probabilities = reference_outputs(trained[0], images)[PROBABILITIES]
    np.testing.assert_allclose(onnx_probabilities, torch_probabilities, atol=1e-5)


def test_untrained_cnn_exports_under_the_contract(splits: Splits) -> None:
    torch.manual_seed(0)
    model = ContractNet("cnn").eval()
    finished = torch_train.export(model, blank_metadata("cnn"), splits.test_images[:8])
    validated = validate_model(finished)
    assert validated.outputs == tuple(output_names("cnn"))
    assert sorted(validated.metadata.weights) == ["conv1", "conv2", "conv3", "conv4", "fc1", "fc2"]


def test_verify_export_rejects_perturbed_reference_outputs(
    exported: onnx.ModelProto, trained: tuple[ContractNet, list[dict[str, float]]], splits: Splits
) -> None:
    images = splits.test_images[:EXPORT_SAMPLES]
    reference = reference_outputs(trained[0], images)
    errors = verify_export(exported, to_input(images), reference)
    assert set(errors) == set(output_names("lenet")) and max(errors.values()) <= 1e-4

    perturbed = dict(reference)
    perturbed[PROBABILITIES] = reference[PROBABILITIES] + 1e-3
    with pytest.raises(ExportMismatch, match="probabilities="):
        verify_export(exported, to_input(images), perturbed)


def test_verify_export_catches_a_graph_with_wrong_weights(
    exported: onnx.ModelProto, trained: tuple[ContractNet, list[dict[str, float]]], splits: Splits
) -> None:
    broken = onnx.ModelProto()
    broken.CopyFrom(exported)
    bias = next(init for init in broken.graph.initializer if init.name == "fc2.bias")
    bias.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(bias) + np.float32(0.5), name="fc2.bias"))
    images = splits.test_images[:EXPORT_SAMPLES]

    with pytest.raises(ExportMismatch, match="logits="):
        verify_export(broken, to_input(images), reference_outputs(trained[0], images))


def test_compare_outputs_tolerances() -> None:
    layer = np.full((2, 4), 1000.0, dtype=np.float32)
    # relative to the largest magnitude of the layer: 0.05 off 1000 passes a 1e-4 tolerance
    assert compare_outputs({"fc1": layer + 0.05}, {"fc1": layer})["fc1"] == pytest.approx(5e-5, rel=1e-3)
    probabilities = np.full((2, 10), 0.1, dtype=np.float32)
    with pytest.raises(ExportMismatch, match="probabilities"):
        compare_outputs({PROBABILITIES: probabilities + 2e-4}, {PROBABILITIES: probabilities})
    with pytest.raises(ExportMismatch, match="fc1"):
        compare_outputs({"fc1": np.full_like(layer, np.nan)}, {"fc1": layer})
    with pytest.raises(ExportMismatch, match="shape"):
        compare_outputs({"fc1": layer[:1]}, {"fc1": layer})


def test_run_writes_a_versioned_model_with_metadata(tmp_path: Path, splits: Splits) -> None:
    path = torch_train.run(RUN_SETTINGS, mnist_dir(), tmp_path / "models", tmp_path / "reports", progress=False)

    assert path == tmp_path / "models" / "lenet-pytorch" / "1" / "model.onnx"
    model = onnx.load(path)
    metadata = validate_model(model).metadata
    assert (metadata.framework, metadata.architecture, metadata.flatten_order) == ("pytorch", "lenet", "CHW")
    assert metadata.framework_version == torch.__version__
    _, probabilities = onnx_predict(model, splits.test_images)
    assert metadata.test_accuracy == pytest.approx(float(np.mean(probabilities.argmax(1) == splits.test_labels)))
    assert metadata.test_accuracy > 0.3
    assert metadata.training["test_images"] == RUN_SETTINGS.test_limit
    assert metadata.training["train_images"] == RUN_SETTINGS.train_limit
    assert len(metadata.training["history"]) == RUN_SETTINGS.epochs
    assert metadata.training["seed"] == RUN_SETTINGS.seed
    assert metadata.data_sha256 == data.dataset_sha256(mnist_dir())
    report = tmp_path / "reports" / "lenet-pytorch"
    assert {p.name for p in report.iterdir()} >= {"confusion_matrix.png", "confident_errors.png", "evaluation.json", "metadata.json"}


def test_write_model_picks_the_next_free_version(tmp_path: Path, exported: onnx.ModelProto) -> None:
    first = write_model(exported, tmp_path, "lenet-pytorch")
    second = write_model(exported, tmp_path, "lenet-pytorch")
    pinned = write_model(exported, tmp_path, "lenet-pytorch", version=7)
    after_pinned = write_model(exported, tmp_path, "lenet-pytorch")

    assert [p.parent.name for p in (first, second, pinned, after_pinned)] == ["1", "2", "7", "8"]
    assert onnx.load(second).SerializeToString() == exported.SerializeToString()
    assert not list(tmp_path.rglob("*.part"))
