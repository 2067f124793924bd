"""What both trainers share: settings, the validation split, augmentation, ONNX evaluation and writing."""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from training import data
from training.augment import AUGMENTATION_RANGES, DEVICES, PRESETS, Augmentation, augment
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
    # augmentation (training/augment.py): the preset's name, then each range; 0 turns one off
    augment: str = "devices"
    augment_shift: float = DEVICES.shift
    augment_rotation: float = DEVICES.rotation
    augment_scale: float = DEVICES.scale
    augment_aspect: float = DEVICES.aspect
    augment_shear: float = DEVICES.shear
    augment_stroke_thin: float = DEVICES.stroke_thin
    augment_stroke_thick: float = DEVICES.stroke_thick
    augment_elastic_alpha: float = DEVICES.elastic_alpha
    augment_elastic_sigma: float = DEVICES.elastic_sigma
    augment_elastic_probability: float = DEVICES.elastic_probability
    augment_low_resolution_probability: float = DEVICES.low_resolution_probability
    augment_low_resolution_min: float = DEVICES.low_resolution_min
    augment_low_resolution_max: float = DEVICES.low_resolution_max
    augment_blur_probability: float = DEVICES.blur_probability
    augment_blur_sigma: float = DEVICES.blur_sigma
    augment_noise_probability: float = DEVICES.noise_probability
    augment_noise_sigma: float = DEVICES.noise_sigma
    seed: int = 1
    init_from: str = ""  # a contract model to start from (fine-tuning); empty: random initialisation
    train_limit: int = 0  # train on the first N images only (tests, dry runs); 0 = all
    test_limit: int = 0  # evaluate on the first N test images only; 0 = all 10,000
    threads: int = 0  # 0 = the framework's default

    def public(self) -> dict[str, Any]:
        return asdict(self)

    def augmentation(self) -> Augmentation:
        return Augmentation(**{name: getattr(self, f"augment_{name}") for name in AUGMENTATION_RANGES})

    def use_preset(self, name: str) -> None:
        """Set every augmentation range from one of training.augment.PRESETS."""
        preset = PRESETS[name]
        self.augment = name
        for key, value in preset.public().items():
            setattr(self, f"augment_{key}", value)


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


class IncompatibleInit(ValueError):
    """An --init-from model of another architecture or framework."""


def initial_weights(settings: TrainSettings, framework: str) -> dict[str, dict[str, np.ndarray]] | None:
    """The canonical weights (conv OIHW, dense [out, in]) of `settings.init_from`, checked to fit: same
    architecture, and same framework, since the two frameworks flatten in different orders."""
    if not settings.init_from:
        return None
    from contract.validation import layer_weights, validate_model

    model = onnx.load(settings.init_from)
    metadata = validate_model(model).metadata
    if (metadata.architecture, metadata.framework) != (settings.architecture, framework):
        raise IncompatibleInit(f"--init-from {settings.init_from} is {metadata.architecture}-{metadata.framework}, "
                         f"not {settings.architecture}-{framework}")
    return layer_weights(model, metadata)


def init_record(settings: TrainSettings) -> dict[str, Any]:
    """What the metadata says about the starting point of a fine-tuned model."""
    if not settings.init_from:
        return {}
    import hashlib

    from contract.validation import validate_model

    content = Path(settings.init_from).read_bytes()
    metadata = validate_model(onnx.load_from_string(content)).metadata
    return {"init_sha256": hashlib.sha256(content).hexdigest(), "init_test_accuracy": metadata.test_accuracy,
            "init_created": metadata.created}


def to_input(images: np.ndarray) -> np.ndarray:
    """uint8 [n, 28, 28] -> the contract's float32 [n, 1, 28, 28] in [0, 1]."""
    return (images.astype(np.float32) / 255.0)[:, None, :, :]


def augmented_epochs(images: np.ndarray, settings: TrainSettings, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """A freshly augmented copy of the training images for each epoch; the next epoch's copy is made
    in a background thread while the current one trains (numpy and scipy release the GIL)."""
    aug = settings.augmentation()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="augment") as pool:
        pending = pool.submit(augment, images, aug, rng)
        for epoch in range(1, settings.epochs + 1):
            current = pending.result()
            if epoch < settings.epochs:
                pending = pool.submit(augment, images, aug, rng)
            yield current


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


class VersionExists(FileExistsError):
    """The model version to write is already there, and replacing it was not asked for."""


def refuse_existing(out_dir: Path, name: str, version: int | None) -> None:
    """Raise VersionExists when `version` of `name` already holds a model under `out_dir`."""
    if version is not None and store.model_path(out_dir, name, version).exists():
        raise VersionExists(f"{store.model_path(out_dir, name, version)} exists; --force replaces it, "
                            "and without --version the next free version is used")


def write_model(model: onnx.ModelProto, out_dir: Path, name: str, version: int | None = None,
                overwrite: bool = False) -> Path:
    """Write `out_dir/<name>/<version>/model.onnx` atomically; version defaults to the next free one.
    An existing version is replaced only with `overwrite`."""
    if version is None:
        version = store.next_version(out_dir, name)
    elif not overwrite:
        refuse_existing(out_dir, name, version)
    return store.write_atomic(store.model_path(out_dir, name, version), model.SerializeToString())


def finish_and_write(
    model: onnx.ModelProto,
    metadata: ModelMetadata,
    splits: Splits,
    out_dir: Path,
    report_dir: Path | None,
    version: int | None,
    overwrite: bool = False,
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
    path = write_model(model, out_dir, name, version, overwrite)
    log.info("%s: test accuracy %.4f, loss %.4f -> %s", name, evaluation.accuracy, evaluation.loss, path)
    if report_dir is not None:
        report.write_report(evaluation, probabilities, splits.test_images, splits.test_labels, report_dir / name, title=name)
        (report_dir / name / "metadata.json").write_text(json.dumps(metadata.to_props(), indent=2))
    return path
