"""eda.run on the real MNIST files: figures, counts and pixel statistics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.conftest import mnist_dir
from training import eda

TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.fixture(scope="module")
def eda_output(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out_dir = tmp_path_factory.mktemp("eda") / "figures"
    return out_dir, eda.run(mnist_dir(), out_dir)


def test_writes_the_three_figures(eda_output: tuple[Path, dict[str, Any]]) -> None:
    out_dir, summary = eda_output
    expected = ["figure1_label_distribution.png", "figure2_samples.png", "figure3_mean_digits.png"]
    assert summary["figures"] == expected
    for name in expected:
        with Image.open(out_dir / name) as image:
            assert image.format == "PNG"
            assert image.width >= 600 and image.height >= 150
            # a real plot, not a blank canvas
            assert len(set(image.convert("L").getdata())) > 16


def test_summary_file_matches_the_returned_summary(eda_output: tuple[Path, dict[str, Any]]) -> None:
    out_dir, summary = eda_output
    assert json.loads((out_dir / "summary.json").read_text()) == summary
    assert summary["data_dir"] == str(mnist_dir())


def test_shapes_dtypes_and_label_counts(eda_output: tuple[Path, dict[str, Any]]) -> None:
    splits = eda_output[1]["splits"]
    assert splits["train"] == {"images_shape": [60000, 28, 28], "images_dtype": "uint8", "labels_shape": [60000],
                               "labels_dtype": "uint8", "label_counts": TRAIN_COUNTS}
    assert splits["test"] == {"images_shape": [10000, 28, 28], "images_dtype": "uint8", "labels_shape": [10000],
                              "labels_dtype": "uint8", "label_counts": TEST_COUNTS}


def test_pixel_statistics(eda_output: tuple[Path, dict[str, Any]]) -> None:
    train = eda_output[1]["pixels"]["train"]
    # the normalisation constants every MNIST model uses, and the README's mean of 33.318
    assert train["mean_raw"] == pytest.approx(33.318, abs=1e-3)
    assert train["mean"] == pytest.approx(0.1307, abs=1e-4)
    assert train["std"] == pytest.approx(0.3081, abs=1e-4)
    assert train["std_raw"] == pytest.approx(train["std"] * 255, rel=1e-4)
    assert 0.75 < train["zero_fraction"] < 0.85
    assert (train["min_raw"], train["max_raw"]) == (0, 255)
    test = eda_output[1]["pixels"]["test"]
    assert test["mean"] == pytest.approx(train["mean"], abs=0.005)


def test_pixel_statistics_agree_with_numpy() -> None:
    images = np.random.default_rng(0).integers(0, 256, (50, 28, 28), dtype=np.uint8)
    images[:10] = 0
    stats = eda.pixel_statistics(images)
    assert stats["mean_raw"] == pytest.approx(images.mean(), abs=1e-4)
    assert stats["std_raw"] == pytest.approx(images.std(), abs=1e-4)
    assert stats["zero_fraction"] == pytest.approx(np.mean(images == 0), abs=1e-5)


def test_mean_ink_differs_by_digit(eda_output: tuple[Path, dict[str, Any]]) -> None:
    ink = eda_output[1]["mean_ink_by_digit"]
    assert len(ink) == 10
    # a 1 is the thinnest digit, a 0 (or an 8) among the heaviest
    assert int(np.argmin(ink)) == 1
    assert ink[0] > 1.5 * ink[1]


def test_stroke_widths_of_drawn_bars_and_of_mnist(eda_output: tuple[Path, dict[str, Any]]) -> None:
    bars = np.zeros((3, 28, 28), np.uint8)
    for index, width in enumerate((1, 2, 4)):
        bars[index, 4:24, 10 : 10 + width] = 255  # a bar 20 px long: 2 x area / perimeter = 20 w / (20 + w)
    np.testing.assert_allclose(eda.stroke_widths(bars), [20 * w / (20 + w) for w in (1, 2, 4)], rtol=1e-6)
    # MNIST's pens: about 2 px, a little under 1.3 px for the finest twentieth and 3 px for the widest
    widths = eda_output[1]["stroke_width_px"]["train"]
    assert 1.8 < widths["p50"] < 2.1 and 1.1 < widths["p5"] < 1.5 and 2.8 < widths["p95"] < 3.2
