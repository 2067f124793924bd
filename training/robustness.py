"""`mnist-serve evaluate`: accuracy of model versions on MNIST, on perturbed MNIST and on other people's digits.

Conditions, each one set of inputs shared by every model:
- `mnist`: the full 10,000-image test set, as the models were measured.
- `digit`: a seeded subset of the test set perturbed by training/perturb_digits.py, fed to the model as is.
- `photo`: the same subset made into image files by training/perturb_photos.py (scans at any scale,
  shaded paper, a shadow, EXIF-rotated phone JPEGs), read by the service's own decoding and
  preprocessing (service.preprocess.image_to_input), as `POST /v1/models/<name>:predict` with a file does.
- `other`: scikit-learn's bundled UCI digits (not MNIST: other writers, digitised as 8x8 counts),
  made into files and read by the service's preprocessing the same way.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from PIL import Image

from contract import store
from contract.spec import INPUT_NAME, PROBABILITIES
from contract.validation import validate_model
from training import data

log = logging.getLogger(__name__)

MAX_PIXELS = 16_000_000  # the service's default max_image_pixels
PHOTOS: tuple[tuple[str, str, str], ...] = (
    # (perturb_photos generator, table row, what it is)
    ("scan", "scan, dark on light, 1.5-14x", "dark ink on evenly lit paper at 1.5-14x MNIST's size, off centre, JPEG"),
    ("shaded", "shaded paper", "paper under a smooth gradient of light down to 45-70 %, JPEG"),
    ("shadow", "shadow across one side", "a soft-edged shadow (35-60 % of the light) over 15-45 % of the sheet, JPEG"),
    ("exif", "EXIF-rotated phone JPEG", "pixels stored rotated, EXIF Orientation 6, 3 or 8"),
)
OTHER_NAME = "other handwriting (UCI, 8x8)"
OTHER_TUNING_NAME = "UCI, first half (tuning)"
OTHER_HELD_OUT_NAME = "UCI, second half (held out)"
OTHER_BLOCK = 4  # UCI's digits were 32x32 bitmaps counted into 4x4 blocks: px of the bitmap per count
OTHER_MARGIN_BLOCKS = 2  # blank paper around each (8 px of the bitmap), as a scan or a cropped photo has


@dataclass(frozen=True)
class ModelUnderTest:
    name: str
    version: int | None
    path: Path
    origin: str | None = None  # the repository a model outside --models-dir came from; None inside it

    @property
    def label(self) -> str:
        """Unique per file: the results are keyed by it, so a copy from elsewhere names its origin."""
        label = f"{self.name} v{self.version}" if self.version is not None else self.name
        return f"{label} ({self.origin})" if self.origin else label


@dataclass
class Condition:
    name: str
    group: str  # mnist, digit, photo, other
    description: str
    inputs: np.ndarray  # float32 [n, 28, 28] in [0, 1]
    labels: np.ndarray
    refused: int = 0  # files the service's decoding refused (counted as wrong)


def resolve_models(specs: Sequence[str], models_dir: Path) -> list[ModelUnderTest]:
    """A model file: that model; a model directory or a name in `models_dir`: every version;
    `name:version`: that version. A model outside `models_dir` is labelled with where it came from, so that
    a copy of a committed model (say another cnn-pytorch v2) gets a column of its own; a file named twice once."""
    found: list[ModelUnderTest] = []
    for spec in specs:
        path = Path(spec)
        if path.is_file():
            name, version, _ = store.locate(path)
            found.append(ModelUnderTest(name, version, path, _origin(path, version, models_dir)))
            continue
        name, _, version_text = spec.partition(":")
        directory = path if path.is_dir() else models_dir / name
        versions = store.versions_of(directory) if path.is_dir() or store.is_model_name(name) else {}
        if not versions:
            raise FileNotFoundError(f"{spec}: no such model file or directory, and no model of that name in {models_dir}")
        if version_text and not path.is_dir():
            version = store.parse_version(version_text)
            if version not in versions:
                raise FileNotFoundError(f"{spec}: {name} has no version {version_text!r} in {models_dir}")
            versions = {version: versions[version]}
        found.extend(ModelUnderTest(directory.name, version, file, _origin(file, version, models_dir))
                     for version, file in sorted(versions.items()))
    unique: dict[Path, ModelUnderTest] = {}
    for model in found:
        unique.setdefault(model.path.resolve(), model)
    return list(unique.values())


def _origin(file: Path, version: int | None, models_dir: Path) -> str | None:
    """None for a file in `models_dir`; else the directory it was found in: the repository root of a
    `<root>/<name>/<version>/model.onnx` layout, the file's own directory otherwise."""
    root = file.parent.parent.parent if version is not None else file.parent
    if root.resolve() == models_dir.resolve():
        return None
    return str(root)


class Predictor:
    """One ONNX Runtime session over a contract model; labels for float inputs [n, 28, 28]."""

    def __init__(self, model: ModelUnderTest) -> None:
        import onnxruntime as ort

        proto = onnx.load(model.path)
        self.metadata = validate_model(proto).metadata
        options = ort.SessionOptions()
        options.log_severity_level = 3
        self.session = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])

    def labels(self, inputs: np.ndarray, batch_size: int = 500) -> np.ndarray:
        out = [self.session.run([PROBABILITIES], {INPUT_NAME: inputs[start : start + batch_size, None].astype(np.float32)})[0]
               for start in range(0, len(inputs), batch_size)]
        return np.concatenate(out).argmax(axis=1)


def through_service(files: Sequence[bytes], where: str) -> tuple[np.ndarray, np.ndarray]:
    """The service's decoding and preprocessing of each file: inputs [n, 28, 28] and which were read."""
    from service.errors import ServiceError
    from service.preprocess import image_to_input

    inputs = np.zeros((len(files), 28, 28), np.float32)
    read = np.zeros(len(files), bool)
    for index, content in enumerate(files):
        try:
            inputs[index] = image_to_input(content, MAX_PIXELS, True, f"{where}[{index}]")
            read[index] = True
        except ServiceError as exc:
            log.warning("%s", exc)
    return inputs, read


def _condition_from_files(name: str, group: str, description: str, files: Sequence[bytes], labels: np.ndarray) -> Condition:
    inputs, read = through_service(files, name)
    labels = labels.astype(np.int64).copy()
    labels[~read] = -1  # a refused file is never right
    return Condition(name, group, description, inputs, labels, refused=int((~read).sum()))


def other_handwriting_file(counts: np.ndarray) -> bytes:
    """One UCI digit (8x8 ink counts, 0-16) as a 48x48 PNG, white on black as the data set stores it: the
    counts framed by two blocks of blank paper, then enlarged 4x (bicubic) to the bitmap's scale.
    The margin is added before enlarging so that the interpolation sees the paper: every UCI digit
    fills its box from top to bottom, and enlarging the box alone would cut those strokes off flat."""
    side = counts.shape[0] + 2 * OTHER_MARGIN_BLOCKS
    framed = np.zeros((side, side), np.uint8)
    framed[OTHER_MARGIN_BLOCKS:-OTHER_MARGIN_BLOCKS, OTHER_MARGIN_BLOCKS:-OTHER_MARGIN_BLOCKS] = np.clip(
        np.rint(counts * (255.0 / 16.0)), 0, 255)
    sheet = Image.fromarray(framed).resize((side * OTHER_BLOCK,) * 2, Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG")
    return buffer.getvalue()


def other_handwriting(limit: int = 0) -> list[Condition]:
    """scikit-learn's copy of the UCI test digits: 1,797 digits by 13 writers who are not in MNIST, digitised
    as 8x8 counts (0-16) of ink in 4x4 blocks of a 32x32 bitmap (other_handwriting_file makes each a PNG).
    Three rows: all of them, the first half (the one the augmentation was tuned on) and the second half
    (held out: it measures transfer). `limit`: the first N digits only (0: all)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    count = limit or len(digits.target)
    files = [other_handwriting_file(counts) for counts in digits.images[:count]]
    every = _condition_from_files(OTHER_NAME, "other", "scikit-learn's load_digits: UCI optdigits test set, 13 writers, "
                                  "8x8 ink counts framed and enlarged to 48x48 PNGs", files, digits.target[:count])
    half = count // 2
    tuning, held_out = slice(0, half), slice(half, count)
    return [every] + [Condition(name, "other", f"{every.description}; digits {part.start + 1}-{part.stop}",
                                every.inputs[part], every.labels[part], refused=int((every.labels[part] < 0).sum()))
                      for name, part in ((OTHER_TUNING_NAME, tuning), (OTHER_HELD_OUT_NAME, held_out))]


def conditions(data_dir: str | Path | None, robust: bool, limit: int, seed: int, other_limit: int = 0) -> Iterator[Condition]:
    from training import perturb_digits, perturb_photos

    test = data.load_split("test", data_dir)
    yield Condition(f"MNIST test ({len(test):,})", "mnist", "the MNIST test set as the models were measured",
                    test.images.astype(np.float32) / 255.0, test.labels.astype(np.int64))
    if not robust:
        return
    chosen = np.sort(np.random.default_rng(seed).choice(len(test), min(limit, len(test)), replace=False))
    digits, labels = test.images[chosen], test.labels[chosen].astype(np.int64)
    for index, perturbation in enumerate(perturb_digits.PERTURBATIONS):
        rng = np.random.default_rng([seed, index])
        yield Condition(perturbation.name, "digit", perturbation.description,
                        perturbation.perturb(digits, rng).astype(np.float32), labels)
    for generator, name, description in PHOTOS:
        yield _condition_from_files(name, "photo", description, perturb_photos.generate(generator, digits, seed=seed), labels)
    yield from other_handwriting(other_limit)


def preprocessing_fingerprint() -> str:
    """SHA-256 over the service's preprocessing sources: which preprocessing the photo rows measured."""
    import hashlib

    import service.preprocess

    package = Path(service.preprocess.__file__).parent
    digest = hashlib.sha256()
    for source in [package / "preprocess.py", *sorted((package / "imaging").glob("*.py"))]:
        if source.is_file():
            digest.update(source.read_bytes())
    return digest.hexdigest()


def evaluate(models: Sequence[ModelUnderTest], measured: Sequence[Condition], seed: int, subset: int) -> dict[str, Any]:
    """Every model's accuracy on every condition, as the report's JSON document."""
    predictors = {model.label: Predictor(model) for model in models}
    rows: list[dict[str, Any]] = []
    for condition in measured:
        accuracy = {label: float(np.mean(predictor.labels(condition.inputs) == condition.labels))
                    for label, predictor in predictors.items()}
        rows.append({"name": condition.name, "group": condition.group, "description": condition.description,
                     "images": int(len(condition.labels)), "refused": condition.refused, "accuracy": accuracy})
        log.info("%s: %s", condition.name, ", ".join(f"{k} {v:.4f}" for k, v in accuracy.items()))
    return {
        "seed": seed,
        "subset": subset,
        "preprocessing_sha256": preprocessing_fingerprint(),
        "models": [{"label": model.label, "name": model.name, "version": model.version, "path": str(model.path),
                    "origin": model.origin,
                    "framework": predictors[model.label].metadata.framework,
                    "architecture": predictors[model.label].metadata.architecture,
                    "augmentation": predictors[model.label].metadata.training.get("augment", "shift")} for model in models],
        "conditions": rows,
    }


def run(models: Sequence[ModelUnderTest], data_dir: str | Path | None, out_dir: Path, robust: bool = True,
        limit: int = 1000, seed: int = 0, other_limit: int = 0) -> dict[str, Any]:
    """Every condition against every model; writes robustness.json, .md and .png into `out_dir`."""
    from training import robustness_report

    started = time.monotonic()
    measured = list(conditions(data_dir, robust, limit, seed, other_limit))
    log.info("%d conditions built in %.0fs", len(measured), time.monotonic() - started)
    result = evaluate(models, measured, seed, min(limit, 10_000) if robust else 0)
    robustness_report.write(result, out_dir)
    return result
