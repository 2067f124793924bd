"""Exploratory data analysis of MNIST: shapes, label balance, sample images and pixel statistics.

`run` writes three figures and `summary.json` to an output directory and returns the summary.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from training import data

LABEL_FIGURE = "figure1_label_distribution.png"
SAMPLES_FIGURE = "figure2_samples.png"
MEAN_DIGITS_FIGURE = "figure3_mean_digits.png"
SUMMARY_FILE = "summary.json"
SAMPLES_PER_DIGIT = 5
SAMPLE_SEED = 0
DIGITS = range(10)


def describe_split(split: data.MnistSplit) -> dict[str, Any]:
    """Shapes, dtypes and label counts of one split."""
    return {
        "images_shape": list(split.images.shape),
        "images_dtype": str(split.images.dtype),
        "labels_shape": list(split.labels.shape),
        "labels_dtype": str(split.labels.dtype),
        "label_counts": np.bincount(split.labels, minlength=10).tolist(),
    }


def pixel_statistics(images: np.ndarray) -> dict[str, float]:
    """Mean and standard deviation of the raw 0-255 values and of the [0, 1] values, and the
    fraction of zero pixels; computed exactly from the 256-bin histogram, without a float copy."""
    histogram = np.bincount(images.reshape(-1), minlength=256).astype(np.float64)
    values = np.arange(256, dtype=np.float64)
    total = histogram.sum()
    mean = float((histogram * values).sum() / total)
    std = float(np.sqrt((histogram * (values - mean) ** 2).sum() / total))
    return {
        "mean_raw": round(mean, 4),
        "std_raw": round(std, 4),
        "mean": round(mean / 255.0, 5),
        "std": round(std / 255.0, 5),
        "zero_fraction": round(float(histogram[0] / total), 5),
        "min_raw": int(np.nonzero(histogram)[0].min()),
        "max_raw": int(np.nonzero(histogram)[0].max()),
    }


def stroke_widths(images: np.ndarray) -> np.ndarray:
    """Per image [n, h, w], the mean stroke width in px: 2 x area / perimeter of the ink above half the
    image's brightest value (a stroke of width w and length l >> w has area w l and perimeter 2 l)."""
    ink = images.astype(np.float32) > 0.5 * images.max(axis=(1, 2), keepdims=True).astype(np.float32)
    padded = np.pad(ink, ((0, 0), (1, 1), (1, 1)))
    perimeter = (padded[:, 1:] != padded[:, :-1]).sum(axis=(1, 2)) + (padded[:, :, 1:] != padded[:, :, :-1]).sum(axis=(1, 2))
    return 2.0 * ink.sum(axis=(1, 2)) / np.maximum(perimeter, 1)


def percentiles(values: np.ndarray, points: tuple[int, ...] = (5, 25, 50, 75, 95)) -> dict[str, float]:
    return {f"p{point}": round(float(value), 3) for point, value in zip(points, np.percentile(values, points))}


def mean_digit_images(split: data.MnistSplit) -> np.ndarray:
    """The average image of each digit, float [10, 28, 28] on the 0-255 scale."""
    return np.stack([split.images[split.labels == digit].mean(axis=0) for digit in DIGITS])


def plot_label_distribution(counts: dict[str, list[int]], path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(counts), figsize=(11, 4))
    for ax, (split_name, split_counts) in zip(axes, counts.items()):
        bars = ax.bar(list(DIGITS), split_counts, color="tab:blue" if split_name == "train" else "tab:orange")
        ax.bar_label(bars, fontsize=7)
        ax.set(title=f"{split_name}: {sum(split_counts):,} images", xlabel="digit", ylabel="images", xticks=list(DIGITS))
    fig.suptitle("MNIST label distribution")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_samples(split: data.MnistSplit, path: Path) -> None:
    """A grid with one column per digit and `SAMPLES_PER_DIGIT` seeded random examples in each."""
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(SAMPLE_SEED)
    fig, axes = plt.subplots(SAMPLES_PER_DIGIT, 10, figsize=(10, 1.15 * SAMPLES_PER_DIGIT))
    for digit in DIGITS:
        chosen = rng.choice(np.nonzero(split.labels == digit)[0], SAMPLES_PER_DIGIT, replace=False)
        for row, index in enumerate(chosen):
            ax = axes[row, digit]
            ax.imshow(split.images[index], cmap="gray")
            ax.set_title(f"{split.labels[index]} (#{index})", fontsize=7)
            ax.axis("off")
    fig.suptitle("Training images and their labels")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_mean_digits(means: np.ndarray, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 10, figsize=(12, 1.8))
    for digit, ax in zip(DIGITS, axes):
        ax.imshow(means[digit], cmap="gray", vmin=0, vmax=255)
        ax.set_title(str(digit))
        ax.axis("off")
    fig.suptitle("Mean training image per digit")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run(data_dir: str | Path | None, out_dir: Path) -> dict[str, Any]:
    """Compute the statistics, write the figures and `summary.json` into `out_dir`, return the summary."""
    import matplotlib

    matplotlib.use("Agg")

    directory = data.resolve_data_dir(data_dir)
    splits = {name: data.load_split(name, directory) for name in ("train", "test")}
    out_dir.mkdir(parents=True, exist_ok=True)

    described = {name: describe_split(split) for name, split in splits.items()}
    means = mean_digit_images(splits["train"])
    plot_label_distribution({name: info["label_counts"] for name, info in described.items()}, out_dir / LABEL_FIGURE)
    plot_samples(splits["train"], out_dir / SAMPLES_FIGURE)
    plot_mean_digits(means, out_dir / MEAN_DIGITS_FIGURE)

    summary: dict[str, Any] = {
        "data_dir": str(directory),
        "splits": described,
        "pixels": {name: pixel_statistics(split.images) for name, split in splits.items()},
        "mean_ink_by_digit": [round(float(means[digit].mean()), 3) for digit in DIGITS],
        "stroke_width_px": {name: percentiles(stroke_widths(split.images)) for name, split in splits.items()},
        "figures": [LABEL_FIGURE, SAMPLES_FIGURE, MEAN_DIGITS_FIGURE],
    }
    (out_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2))
    return summary
