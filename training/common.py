"""What both trainers share: settings, the validation split, augmentation, ONNX evaluation and writing."""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from training import data
from contract import store
from contract.metadata import ModelMetadata
from contract.spec import INPUT_NAME, LOGITS, PROBABILITIES

log = logging.getLogger(__name__)


@dataclass
class TrainSettings:
    architecture: str = "cnn"
    epochs: int = 12
    batch_size: int = 128
    learning_rate: float = 1e-3
    optimizer: str = "adam"
    schedule: str = "onecycle"
    validation_size: int = 5000
    augment_shift: int = 2  # pixels; 0 turns augmentation off
    seed: int = 1
    train_limit: int = 0  # train on the first N images only (tests, dry runs); 0 = all
    test_limit: int = 0  # evaluate on the first N test images only; 0 = all 10,000
    threads: int = 0  # 0 = the framework's default

    def public(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Splits:
    train_images: np.ndarray
    train_labels: np.ndarray
    val_images: np.ndarray
    val_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray


def load_splits(settings: TrainSettings, data_dir: str | Path | None) -> Splits:
    """Training set minus a held-out validation split (seeded), and the test set."""
    train = data.load_split("train", data_dir)
    test = data.load_split("test", data_dir)
    order = np.random.default_rng(settings.seed).permutation(len(train))
    val_idx, train_idx = order[: settings.validation_size], order[settings.validation_size :]
    if settings.train_limit:
        train_idx = train_idx[: settings.train_limit]
        val_idx = val_idx[: max(settings.train_limit // 5, 1)]
    test_count = settings.test_limit or len(test)
    return Splits(
        train_images=train.images[train_idx],
        train_labels=train.labels[train_idx],
        val_images=train.images[val_idx],
        val_labels=train.labels[val_idx],
        test_images=test.images[:test_count],
        test_labels=test.labels[:test_count],
    )


def to_input(images: np.ndarray) -> np.ndarray:
    """uint8 [n, 28, 28] -> the contract's float32 [n, 1, 28, 28] in [0, 1]."""
    return (images.astype(np.float32) / 255.0)[:, None, :, :]


def random_shift(images: np.ndarray, max_shift: int, rng: np.random.Generator) -> np.ndarray:
    """Shift each image by up to `max_shift` pixels in x and y, filling with black."""
    if max_shift <= 0:
        return images
    n = len(images)
    padded = np.pad(images, ((0, 0), (max_shift, max_shift), (max_shift, max_shift)))
    dy = rng.integers(-max_shift, max_shift + 1, n)
    dx = rng.integers(-max_shift, max_shift + 1, n)
    out = np.empty_like(images)
    size = images.shape[1]
    for y in range(-max_shift, max_shift + 1):
        for x in range(-max_shift, max_shift + 1):
            idx = np.nonzero((dy == y) & (dx == x))[0]
            if idx.size:
                top, left = max_shift - y, max_shift - x
                out[idx] = padded[idx, top : top + size, left : left + size]
    return out


def onnx_predict(model: onnx.ModelProto, images: np.ndarray, batch_size: int = 500) -> tuple[np.ndarray, np.ndarray]:
    """Logits and probabilities of a finished model over uint8 images, through ONNX Runtime."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    logits, probs = [], []
    for start in range(0, len(images), batch_size):
        batch_logits, batch_probs = session.run([LOGITS, PROBABILITIES], {INPUT_NAME: to_input(images[start : start + batch_size])})
        logits.append(batch_logits)
        probs.append(batch_probs)
    return np.concatenate(logits), np.concatenate(probs)


def cross_entropy(probabilities: np.ndarray, labels: np.ndarray) -> float:
    picked = probabilities[np.arange(len(labels)), labels.astype(np.int64)]
    return float(-np.mean(np.log(np.clip(picked, 1e-12, 1.0))))


def model_dir_name(architecture: str, framework: str) -> str:
    return f"{architecture}-{framework}"


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()


def write_model(model: onnx.ModelProto, out_dir: Path, name: str, version: int | None = None) -> Path:
    """Write `out_dir/<name>/<version>/model.onnx` atomically; version defaults to the next free one."""
    if version is None:
        version = store.next_version(out_dir, name)
    return store.write_atomic(store.model_path(out_dir, name, version), model.SerializeToString())


def finish_and_write(
    model: onnx.ModelProto,
    metadata: ModelMetadata,
    splits: Splits,
    out_dir: Path,
    report_dir: Path | None,
    version: int | None,
) -> Path:
    """Evaluate the verified ONNX model on the test set, record the figures, write model and report."""
    from training import report

    _, probabilities = onnx_predict(model, splits.test_images)
    evaluation = report.evaluate(probabilities, splits.test_labels)
    metadata.test_accuracy = evaluation.accuracy
    metadata.test_loss = evaluation.loss
    metadata.per_class_accuracy = evaluation.per_class_accuracy
    metadata.training["test_images"] = int(len(splits.test_labels))
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, metadata.to_props())
    name = model_dir_name(metadata.architecture, metadata.framework)
    path = write_model(model, out_dir, name, version)
    log.info("%s: test accuracy %.4f, loss %.4f -> %s", name, evaluation.accuracy, evaluation.loss, path)
    if report_dir is not None:
        report.write_report(evaluation, probabilities, splits.test_images, splits.test_labels, report_dir / name, title=name)
        (report_dir / name / "metadata.json").write_text(json.dumps(metadata.to_props(), indent=2))
    return path
