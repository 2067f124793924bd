"""`mnist-serve evaluate --robustness` end to end on a small subset, and its parts: the digit perturbations,
the service's preprocessing of the photo-like files, the other handwriting, model resolution."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from PIL import Image

from contract.validation import validate_model
from service.cli import main as cli_main
from tests.conftest import MODELS_DIR, model_file, mnist_dir
from training import data, perturb_digits, robustness
from training.robustness_report import JSON_FILE, MARKDOWN_FILE, PLOT_FILE, legend, markdown_table

LIMIT = 24
OTHER_LIMIT = 60


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("robustness")
    assert cli_main(["evaluate", "--robustness", "lenet-pytorch:1", "lenet-tensorflow:1", "--limit", str(LIMIT),
                     "--other-limit", str(OTHER_LIMIT), "--data-dir", str(mnist_dir()), "--out", str(out)]) == 0
    return out, json.loads((out / JSON_FILE).read_text())


def test_every_condition_for_every_model(report: tuple[Path, dict[str, Any]]) -> None:
    _, result = report
    labels = ["lenet-pytorch v1", "lenet-tensorflow v1"]
    assert [model["label"] for model in result["models"]] == labels
    names = [row["name"] for row in result["conditions"]]
    assert names == (["MNIST test (10,000)"] + [p.name for p in perturb_digits.PERTURBATIONS]
                     + [row[1] for row in robustness.PHOTOS]
                     + [robustness.OTHER_NAME, robustness.OTHER_TUNING_NAME, robustness.OTHER_HELD_OUT_NAME])
    groups = {row["name"]: row["group"] for row in result["conditions"]}
    assert groups["rotation 30°"] == "digit" and groups["shadow across one side"] == "photo"
    for row in result["conditions"]:
        assert sorted(row["accuracy"]) == labels
        assert all(0.0 <= value <= 1.0 for value in row["accuracy"].values())
        expected = {"mnist": 10_000, "other": OTHER_LIMIT}.get(row["group"], LIMIT)
        if row["name"] in (robustness.OTHER_TUNING_NAME, robustness.OTHER_HELD_OUT_NAME):
            expected = OTHER_LIMIT // 2
        assert row["images"] == expected and row["refused"] == 0
    # the halves are the whole, split in two
    other = {row["name"]: row for row in result["conditions"] if row["group"] == "other"}
    for label in labels:
        halves = [other[name]["accuracy"][label] for name in (robustness.OTHER_TUNING_NAME, robustness.OTHER_HELD_OUT_NAME)]
        assert np.mean(halves) == pytest.approx(other[robustness.OTHER_NAME]["accuracy"][label])


def test_mnist_row_reproduces_the_recorded_test_accuracy(report: tuple[Path, dict[str, Any]]) -> None:
    mnist = report[1]["conditions"][0]
    for model in ("lenet-pytorch", "lenet-tensorflow"):
        recorded = validate_model(onnx.load(model_file(model, 1))).metadata.test_accuracy
        assert mnist["accuracy"][f"{model} v1"] == pytest.approx(recorded, abs=1e-9)


def test_perturbations_hurt_where_they_should(report: tuple[Path, dict[str, Any]]) -> None:
    rows = {row["name"]: row["accuracy"]["lenet-pytorch v1"] for row in report[1]["conditions"]}
    # clean scans through the service's preprocessing are as easy as MNIST; heavy noise and 45° are not
    assert rows["scan, dark on light, 1.5-14x"] >= 0.9
    assert rows["rotation 45°"] < rows["rotation 15°"] and rows["noise σ 0.4"] < rows["noise σ 0.2"]
    assert rows[robustness.OTHER_NAME] > 0.7


def test_table_and_plot(report: tuple[Path, dict[str, Any]]) -> None:
    out, result = report
    table = (out / MARKDOWN_FILE).read_text().splitlines()
    assert table[0] == "| condition | images | lenet-pytorch v1 | lenet-tensorflow v1 |"
    assert len(table) == 2 + len(result["conditions"])
    assert table[2].startswith("| MNIST test (10,000) | 10,000 | ")
    with Image.open(out / PLOT_FILE) as plot:
        assert plot.format == "PNG" and plot.width > 400 and len(set(plot.convert("L").getdata())) > 16


def test_digit_perturbations_are_inputs_in_range() -> None:
    digits = data.load_split("test", mnist_dir()).images[:50]
    for perturbation in perturb_digits.PERTURBATIONS:
        out = perturbation.perturb(digits, np.random.default_rng(0))
        assert out.shape == (50, 28, 28) and out.dtype == np.float32, perturbation.name
        assert 0.0 <= out.min() and out.max() <= 1.0, perturbation.name
    ink = digits.astype(np.float32).sum() / 255.0
    thick = perturb_digits.stroke(4)(digits, np.random.default_rng(0)).sum()
    thin = perturb_digits.stroke(-1)(digits, np.random.default_rng(0)).sum()
    assert thin < ink < thick
    assert perturb_digits.scale(0.6)(digits, np.random.default_rng(0)).sum() == pytest.approx(0.36 * ink, rel=0.08)


def test_other_handwriting_is_framed_before_it_is_enlarged() -> None:
    """A UCI digit fills its 8x8 box from top to bottom; with the margin added first, the enlarged strokes
    fade out into the paper instead of stopping flat at the box's edge."""
    from sklearn.datasets import load_digits

    counts = load_digits().images[0]  # a 0: ink in the first and last rows of its box
    with Image.open(io.BytesIO(robustness.other_handwriting_file(counts))) as sheet:
        pixels = np.asarray(sheet, dtype=np.float32)
    assert pixels.shape == (48, 48)
    margin = robustness.OTHER_MARGIN_BLOCKS * robustness.OTHER_BLOCK
    assert pixels[:margin - 2].max() < 30 and pixels[-(margin - 2):].max() < 30  # paper, give or take the kernel
    rows = pixels.max(axis=1)
    top = int(np.argmax(rows > 0.2 * rows.max()))
    # the stroke rises over several rows (the enlargement of the top count), not in one step at the box edge
    assert rows[top] < 0.6 * rows.max() and top < margin


def test_photo_files_go_through_the_service_preprocessing() -> None:
    from service.preprocess import image_to_input
    from training.perturb_photos import generate

    digits = data.load_split("test", mnist_dir()).images[:3]
    files = generate("shadow", digits, seed=4)
    inputs, read = robustness.through_service(files, "shadow")
    assert read.all()
    for content, expected in zip(files, inputs):
        np.testing.assert_array_equal(expected, image_to_input(content, robustness.MAX_PIXELS, True, "x"))
    inputs, read = robustness.through_service([b"not an image", files[0]], "broken")
    assert read.tolist() == [False, True] and not inputs[0].any()


def test_resolve_models(tmp_path: Path) -> None:
    for version in (1, 3):
        (tmp_path / "lenet-pytorch" / str(version)).mkdir(parents=True)
        shutil.copy(model_file("lenet-pytorch", 1), tmp_path / "lenet-pytorch" / str(version) / "model.onnx")

    every = robustness.resolve_models(["lenet-pytorch"], tmp_path)
    assert [model.label for model in every] == ["lenet-pytorch v1", "lenet-pytorch v3"]
    assert [m.label for m in robustness.resolve_models(["lenet-pytorch:3"], tmp_path)] == ["lenet-pytorch v3"]
    assert [m.label for m in robustness.resolve_models([str(tmp_path / "lenet-pytorch")], MODELS_DIR)] == [
        f"lenet-pytorch v1 ({tmp_path})", f"lenet-pytorch v3 ({tmp_path})"]
    assert [m.label for m in robustness.resolve_models([str(tmp_path / "lenet-pytorch")], tmp_path)] == [
        "lenet-pytorch v1", "lenet-pytorch v3"]
    committed = model_file("cnn-pytorch", 1)
    assert robustness.resolve_models([str(committed)], tmp_path)[0].label == f"cnn-pytorch v1 ({MODELS_DIR})"
    assert [m.label for m in robustness.resolve_models([str(committed), "cnn-pytorch:1"], MODELS_DIR)] == ["cnn-pytorch v1"]
    with pytest.raises(FileNotFoundError, match="no model of that name"):
        robustness.resolve_models(["nothing-here"], tmp_path)
    with pytest.raises(FileNotFoundError, match="has no version '2'"):
        robustness.resolve_models(["lenet-pytorch:2"], tmp_path)


def test_a_copy_from_elsewhere_is_measured_in_a_column_of_its_own(tmp_path: Path) -> None:
    """Another lenet-tensorflow v2 (here v1's weights, filed as v2 elsewhere) beside the committed v2: two
    labels, and each column holds its own file's accuracy, not the committed model's twice."""
    copy = tmp_path / "candidates" / "lenet-tensorflow" / "2" / "model.onnx"
    copy.parent.mkdir(parents=True)
    shutil.copy(model_file("lenet-tensorflow", 1), copy)
    models = robustness.resolve_models(["lenet-tensorflow:2", str(copy)], MODELS_DIR)
    assert [model.label for model in models] == ["lenet-tensorflow v2", f"lenet-tensorflow v2 ({tmp_path / 'candidates'})"]

    test = data.load_split("test", mnist_dir())
    mnist = robustness.Condition("MNIST test", "mnist", "", test.images.astype(np.float32) / 255.0,
                                 test.labels.astype(np.int64))
    result = robustness.evaluate(models, [mnist], seed=0, subset=0)
    measured = result["conditions"][0]["accuracy"]
    recorded = {model.label: validate_model(onnx.load(model.path)).metadata.test_accuracy for model in models}
    assert recorded[models[0].label] != recorded[models[1].label]
    assert measured == pytest.approx(recorded, abs=1e-9)
    assert [entry["origin"] for entry in result["models"]] == [None, str(tmp_path / "candidates")]
    header = markdown_table(result).splitlines()[0]
    assert header == f"| condition | images | lenet-tensorflow v2 | lenet-tensorflow v2 ({tmp_path / 'candidates'}) |"
    assert [legend(entry) for entry in result["models"]] == ["v2", f"v2 ({tmp_path / 'candidates'})"]
