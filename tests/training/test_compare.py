"""compare_models: the committed PyTorch and TensorFlow models agree, and model paths resolve."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from service.cli import main as cli_main
from tests.conftest import MODELS_DIR, mnist_dir
from training.compare import compare_models, locate_model


def test_committed_cnn_models_agree() -> None:
    result = compare_models(MODELS_DIR / "cnn-pytorch", MODELS_DIR / "cnn-tensorflow", mnist_dir())

    assert result["test_images"] == 10_000
    assert result["first"]["name"] == "cnn-pytorch" and result["first"]["framework"] == "pytorch"
    assert result["second"]["name"] == "cnn-tensorflow" and result["second"]["framework"] == "tensorflow"
    assert result["agreement"] >= 0.99
    assert result["disagreements"] == round((1 - result["agreement"]) * 10_000)
    assert len(result["disagreeing_images"]) == min(result["disagreements"], 20)
    for side in ("first", "second"):
        model = result[side]
        # the metadata recorded the same full-test-set accuracy that ONNX Runtime reproduces here
        assert model["accuracy"] == pytest.approx(model["recorded_test_accuracy"], abs=1e-9)
        assert model["errors"] == round((1 - model["accuracy"]) * 10_000)
        assert result["both_wrong"] <= model["errors"]


def test_a_model_agrees_with_itself_through_the_cli(capsys: pytest.CaptureFixture[str]) -> None:
    directory = MODELS_DIR / "lenet-pytorch"
    file = locate_model(directory).path

    assert cli_main(["compare", str(directory), str(file), "--data-dir", str(mnist_dir())]) == 0
    result = json.loads(capsys.readouterr().out)

    assert result["agreement"] == 1.0 and result["disagreements"] == 0 and result["disagreeing_images"] == []
    assert result["first"]["accuracy"] == result["second"]["accuracy"] >= 0.99
    assert result["first"]["path"] == result["second"]["path"] == str(file)


def test_locate_model_picks_the_highest_numeric_version(tmp_path: Path) -> None:
    source = locate_model(MODELS_DIR / "lenet-pytorch").path
    for version in ("2", "10", "latest"):
        (tmp_path / "lenet-pytorch" / version).mkdir(parents=True)
        shutil.copy(source, tmp_path / "lenet-pytorch" / version / "model.onnx")
    (tmp_path / "lenet-pytorch" / "11").mkdir()  # a version directory without a model is not a version

    location = locate_model(tmp_path / "lenet-pytorch")

    assert (location.name, location.version) == ("lenet-pytorch", 10)
    assert location.path == tmp_path / "lenet-pytorch" / "10" / "model.onnx"


def test_locate_model_accepts_a_file(tmp_path: Path) -> None:
    source = locate_model(MODELS_DIR / "lenet-pytorch").path
    loose = tmp_path / "candidate.onnx"
    shutil.copy(source, loose)

    assert locate_model(source).version == int(source.parent.name)
    assert locate_model(source).name == "lenet-pytorch"
    assert (locate_model(loose).name, locate_model(loose).version) == ("candidate", None)


def test_locate_model_rejects_paths_without_a_model(tmp_path: Path) -> None:
    (tmp_path / "empty" / "1").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no <version>/model.onnx"):
        locate_model(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="no such model"):
        locate_model(tmp_path / "absent")
