"""The robustness result as files: robustness.json, a markdown table (robustness.md) and a plot (robustness.png)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

JSON_FILE = "robustness.json"
MARKDOWN_FILE = "robustness.md"
PLOT_FILE = "robustness.png"


def markdown_table(result: dict[str, Any]) -> str:
    """One row per condition, one column per model version; the best of each row in bold."""
    labels = [model["label"] for model in result["models"]]
    lines = ["| condition | images | " + " | ".join(labels) + " |",
             "|---|---:|" + "---:|" * len(labels)]
    for row in result["conditions"]:
        best = max(row["accuracy"].values())
        cells = []
        for label in labels:
            value = row["accuracy"][label]
            text = f"{100 * value:.1f}%" if row["group"] != "mnist" else f"{100 * value:.2f}%"
            cells.append(f"**{text}**" if value == best else text)
        images = f"{row['images']:,}" + (f" ({row['refused']} refused)" if row["refused"] else "")
        lines.append(f"| {row['name']} | {images} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def legend(model: dict[str, Any]) -> str:
    """A bar's name within its model's panel: the version, and where the file came from when not --models-dir."""
    text = f"v{model['version']}" if model["version"] is not None else model["name"]
    return f"{text} ({model['origin']})" if model.get("origin") else text


def plot(result: dict[str, Any], path: Path) -> None:
    """One panel per model name: each condition's accuracy, one bar per version."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = list(dict.fromkeys(model["name"] for model in result["models"]))
    rows = result["conditions"]
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names) + 2.2, 0.24 * len(rows) + 1.4), sharey=True, squeeze=False)
    positions = np.arange(len(rows))
    for ax, name in zip(axes[0], names):
        versions = [model for model in result["models"] if model["name"] == name]
        height = 0.8 / len(versions)
        for index, model in enumerate(versions):
            values = [100 * row["accuracy"][model["label"]] for row in rows]
            ax.barh(positions + (index - (len(versions) - 1) / 2) * height, values, height=height,
                    label=legend(model))
        ax.set(title=name, xlim=(0, 100), xlabel="accuracy (%)")
        ax.grid(axis="x", alpha=0.3)
        ax.legend(loc="lower left", fontsize=7)
    axes[0][0].set_yticks(positions, [row["name"] for row in rows], fontsize=7)
    axes[0][0].invert_yaxis()
    fig.suptitle("Accuracy per perturbation, by model version", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=72)
    plt.close(fig)


def write(result: dict[str, Any], out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / JSON_FILE).write_text(json.dumps(result, indent=2) + "\n")
    (out_dir / MARKDOWN_FILE).write_text(markdown_table(result))
    plot(result, out_dir / PLOT_FILE)
