"""The training subcommands through the real CLI: no silent overwrite, reports beside --out, JSON on stdout,
model names for compare, and help that shows every default."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import onnx
import pytest

from contract.validation import validate_model
from service.cli import build_parser, main as cli_main
from tests.conftest import MODELS_DIR, REPO_ROOT, model_file, mnist_dir
from training.commands import resolve_model

TRAINING_COMMANDS = ("train", "eda", "compare", "evaluate")


def repo_reports() -> dict[str, float]:
    """Every file under the repo's reports/ with its modification time."""
    root = REPO_ROOT / "reports"
    return {str(path): path.stat().st_mtime for path in root.rglob("*") if path.is_file()} if root.exists() else {}


def dry_run(out: Path, *extra: str, framework: str = "pytorch") -> int:
    return cli_main(["train", "--framework", framework, "--arch", "lenet", "--dry-run", "--threads", "1",
                     "--data-dir", str(mnist_dir()), "--out", str(out), *extra])


@pytest.fixture()
def models_with_version_1(tmp_path: Path) -> Path:
    out = tmp_path / "models"
    (out / "lenet-pytorch" / "1").mkdir(parents=True)
    shutil.copy(model_file("lenet-pytorch", 1), out / "lenet-pytorch" / "1" / "model.onnx")
    return out


def test_train_refuses_to_overwrite_a_version(models_with_version_1: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = models_with_version_1 / "lenet-pytorch" / "1" / "model.onnx"
    before = target.read_bytes()

    assert dry_run(models_with_version_1, "--version", "1") == 2

    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("mnist-serve train: refusing to overwrite")
    assert str(target) in err[0] and "--force" in err[0]
    assert target.read_bytes() == before
    assert not (models_with_version_1.parent / "reports").exists()


def test_force_replaces_and_reports_go_beside_out(models_with_version_1: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = models_with_version_1 / "lenet-pytorch" / "1" / "model.onnx"
    before, reports_before = target.read_bytes(), repo_reports()

    assert dry_run(models_with_version_1, "--version", "1", "--force", "--augment-elastic-probability", "1",
                   "--augment-low-resolution-max", "12") == 0

    assert capsys.readouterr().out == f"{target}\n"
    assert target.read_bytes() != before
    training = validate_model(onnx.load(target)).metadata.training
    assert training["train_images"] == 1000 and training["augment"] == "devices"
    assert training["augment_rotation"] == 12 and training["augment_elastic_probability"] == 1
    assert training["augment_stroke_thick"] == 3 and training["augment_low_resolution_max"] == 12
    report = models_with_version_1.parent / "reports" / "lenet-pytorch"
    assert (report / "evaluation.json").is_file() and (report / "confusion_matrix.png").is_file()
    assert repo_reports() == reports_before


def test_report_dir_and_init_from(models_with_version_1: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    reports = tmp_path / "elsewhere"
    assert dry_run(models_with_version_1, "--report-dir", str(reports), "--init-from", "lenet-pytorch:1", "--augment", "shift") == 0

    written = Path(capsys.readouterr().out.strip())
    assert written == models_with_version_1 / "lenet-pytorch" / "2" / "model.onnx"
    assert (reports / "lenet-pytorch" / "evaluation.json").is_file()
    metadata = validate_model(onnx.load(written)).metadata
    # started from version 1 (99.5 %): one short epoch keeps it far above a model trained from scratch on 1,000 images
    assert metadata.training["init_from"] == str(models_with_version_1 / "lenet-pytorch" / "1" / "model.onnx")
    assert metadata.training["init_test_accuracy"] > 0.99 and metadata.test_accuracy > 0.95
    assert metadata.training["augment"] == "shift" and metadata.training["augment_rotation"] == 0


@pytest.mark.parametrize(("flags", "named"), [
    (("--augment-low-resolution-min", "12", "--augment-low-resolution-max", "9"), "--augment-low-resolution-min 12"),
    (("--augment-low-resolution-min", "1"), "--augment-low-resolution-min 1"),
    (("--augment-noise-probability", "1.5"), "--augment-noise-probability 1.5"),
    (("--augment-blur-sigma", "-1"), "--augment-blur-sigma -1"),
])
def test_impossible_augmentation_ranges_are_refused_before_training(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: tuple[str, ...], named: str) -> None:
    assert dry_run(tmp_path / "models", *flags) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("mnist-serve train: ") and named in err[0]
    assert not (tmp_path / "models").exists()


def test_init_from_another_framework_is_refused(models_with_version_1: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert dry_run(models_with_version_1, "--init-from", str(model_file("lenet-tensorflow", 1))) == 2
    assert capsys.readouterr().err.strip() == (f"mnist-serve train: --init-from {model_file('lenet-tensorflow', 1)} is "
                                               "lenet-tensorflow, not lenet-pytorch")
    # a name that is not in --out is looked up in the repo's models
    assert dry_run(models_with_version_1, "--init-from", "lenet-tensorflow:1") == 2
    assert capsys.readouterr().err.strip() == (f"mnist-serve train: --init-from {model_file('lenet-tensorflow', 1)} is "
                                               "lenet-tensorflow, not lenet-pytorch")
    assert dry_run(models_with_version_1, "--init-from", "no-such-model") == 2
    assert "no model of that name" in capsys.readouterr().err


def test_tensorflow_progress_stays_off_stdout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from training import tf_train
    from training.common import TrainSettings, load_splits

    settings = TrainSettings(architecture="lenet", epochs=1, train_limit=300, validation_size=100, test_limit=100, threads=1)
    tf_train.train(settings, load_splits(settings, mnist_dir()), progress=True)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "epoch 1" in captured.err and "\x1b[" not in captured.err

    # through the CLI with stderr redirected (not a terminal): no bar at all, and stdout holds only the path
    assert dry_run(tmp_path / "models", framework="tensorflow") == 0
    captured = capsys.readouterr()
    assert captured.out == f"{tmp_path / 'models' / 'lenet-tensorflow' / '1' / 'model.onnx'}\n"
    assert "batch/s" not in captured.err and "\x1b[" not in captured.err


def test_eda_prints_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["eda", "--data-dir", str(mnist_dir()), "--out", str(tmp_path)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads((tmp_path / "summary.json").read_text())
    assert printed["splits"]["test"]["images_shape"] == [10000, 28, 28]


def test_compare_accepts_model_names(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["compare", "lenet-pytorch:1", "lenet-tensorflow", "--data-dir", str(mnist_dir())]) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["first"]["name"], result["first"]["version"]) == ("lenet-pytorch", 1)
    assert result["second"]["name"] == "lenet-tensorflow" and result["agreement"] > 0.99

    assert cli_main(["compare", "lenet-pytorch", "not-a-model"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"mnist-serve compare: not-a-model: no such path, and no model of that name in {MODELS_DIR}"
    assert cli_main(["compare", "lenet-pytorch:99", "lenet-pytorch"]) == 2
    assert "has no version '99'" in capsys.readouterr().err


def test_resolve_model_prefers_an_existing_path(tmp_path: Path) -> None:
    (tmp_path / "cnn-pytorch").mkdir()
    assert resolve_model(str(tmp_path / "cnn-pytorch"), MODELS_DIR) == tmp_path / "cnn-pytorch"
    assert resolve_model("cnn-pytorch", MODELS_DIR) == MODELS_DIR / "cnn-pytorch"
    assert resolve_model("cnn-pytorch:1", MODELS_DIR) == model_file("cnn-pytorch", 1)


def subcommand_parsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    sub = next(action for action in parser._actions if isinstance(action, argparse._SubParsersAction))
    return {name: sub.choices[name] for name in TRAINING_COMMANDS}


@pytest.mark.parametrize("command", TRAINING_COMMANDS)
def test_help_shows_defaults_and_describes_every_argument(command: str) -> None:
    parser = subcommand_parsers()[command]
    assert issubclass(parser.formatter_class, argparse.ArgumentDefaultsHelpFormatter)
    assert parser.description
    for action in parser._actions:
        assert action.help and action.help.strip(), f"{command}: {action.dest} has no description"
    text = " ".join(parser.format_help().split())
    assert "(default:" in text and "(default: None)" not in text and "(default: False)" not in text
    if command == "train":
        assert "--epochs EPOCHS training epochs (default: 12)" in text
        assert "--augment {devices,handwriting,none,shift}" in text and "(default: devices)" in text
        assert "--augment-noise-sigma X max noise sigma, on the [0, 1] scale (default: the preset's)" in text
        assert "--version VERSION model version to write (default: the next free one) --force" in text
