"""Evaluation: accuracy, loss, per-class accuracy, confusion matrix and the most confidently wrong images."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from training.common import cross_entropy


@dataclass
class Evaluation:
    accuracy: float
    loss: float
    per_class_accuracy: list[float]
    confusion: list[list[int]]  # rows: true label, columns: predicted
    count: int


def evaluate(probabilities: np.ndarray, labels: np.ndarray) -> Evaluation:
    predicted = probabilities.argmax(axis=1)
    labels = labels.astype(np.int64)
    confusion = np.zeros((10, 10), dtype=np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    per_class = [float(confusion[d, d] / confusion[d].sum()) if confusion[d].sum() else 0.0 for d in range(10)]
    return Evaluation(
        accuracy=float(np.mean(predicted == labels)),
        loss=cross_entropy(probabilities, labels),
        per_class_accuracy=[round(value, 5) for value in per_class],
        confusion=confusion.tolist(),
        count=int(len(labels)),
    )


def write_report(
    evaluation: Evaluation, probabilities: np.ndarray, images: np.ndarray, labels: np.ndarray, out_dir: Path, title: str
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "evaluation.json").write_text(json.dumps(asdict(evaluation), indent=2))

    confusion = np.array(evaluation.confusion)
    fig, ax = plt.subplots(figsize=(7, 6))
    shown = ax.imshow(np.log1p(confusion), cmap="Blues")
    for (row, col), count in np.ndenumerate(confusion):
        ax.text(col, row, str(count), ha="center", va="center", fontsize=7, color="black" if row != col else "white")
    ax.set(xticks=range(10), yticks=range(10), xlabel="predicted", ylabel="true",
           title=f"{title}: confusion matrix (accuracy {evaluation.accuracy:.2%})")
    fig.colorbar(shown, ax=ax, label="log(1 + count)")
    fig.tight_layout()
    fig.savefig(out_dir / "confusion_matrix.png", dpi=110)
    plt.close(fig)

    predicted = probabilities.argmax(axis=1)
    wrong = np.nonzero(predicted != labels)[0]
    wrong = wrong[np.argsort(-probabilities[wrong, predicted[wrong]])][:25]
    fig, axes = plt.subplots(5, 5, figsize=(8, 8.8))
    for ax in axes.flat:
        ax.axis("off")
    for ax, index in zip(axes.flat, wrong):
        ax.imshow(images[index], cmap="gray")
        ax.set_title(f"#{index}: {labels[index]} as {predicted[index]}\n({probabilities[index, predicted[index]]:.1%})", fontsize=8)
    fig.suptitle(f"{title}: most confidently wrong test images")
    fig.tight_layout()
    fig.savefig(out_dir / "confident_errors.png", dpi=110)
    plt.close(fig)
