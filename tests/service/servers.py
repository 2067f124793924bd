"""Real servers for the hardening tests: a private models directory holding copies of the
committed cnn-pytorch model, and small limits so that every check stays cheap."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

from tests.conftest import MODELS_DIR, ServerProcess, start_server
from contract.spec import PROBABILITIES
from contract.validation import validate_model

MODEL_NAME = "cnn-pytorch"
SOURCE_MODEL = MODELS_DIR / MODEL_NAME / "1" / "model.onnx"

# Settings every test server shares: one model, one thread, a small warm-up batch.
LEAN_SERVER = {
    "MNIST_SERVE_THREADS": "1",
    "MNIST_SERVE_MAX_BATCH_SIZE": "16",
    "MNIST_SERVE_DEFAULT_MODEL": MODEL_NAME,
    "MNIST_SERVE_SHUTDOWN_GRACE_S": "20",
    "MNIST_SERVE_ACCESS_LOG": "true",  # the tests match every answer to the server's log of it
}


def place_model(models_dir: Path, version: int, source: Path = SOURCE_MODEL, name: str = MODEL_NAME) -> Path:
    """Copy a model file to models_dir/name/version/model.onnx, atomically (rename into place),
    the way a deployment should drop a new version."""
    target = models_dir / name / str(version) / "model.onnx"
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(".model.onnx.tmp")
    shutil.copyfile(source, staging)
    staging.replace(target)
    return target


def start_private_server(tmp_dir: Path, env: dict[str, str] | None = None, versions: tuple[int, ...] = (1,)) -> ServerProcess:
    """A server on its own models directory (copies of the committed cnn-pytorch)."""
    models_dir = tmp_dir / "models"
    for version in versions:
        place_model(models_dir, version)
    return start_server(tmp_dir, {**LEAN_SERVER, "MNIST_SERVE_MODELS_DIR": str(models_dir), **(env or {})})


def write_shifted_model(source: Path, target: Path) -> Path:
    """A valid copy of `source` whose last dense layer is rolled by one class: where `source`
    answers label, it answers (label + 1) % 10, so answers from the two versions cannot be
    mistaken for each other."""
    model = onnx.load(source)
    validated = validate_model(model)
    last_dense = [layer.name for layer in validated.layers if layer.kind == "dense"][-1]
    entry = validated.metadata.weights[last_dense]
    initializers = {init.name: init for init in model.graph.initializer}
    out_axis = {"weight": 0 if entry.get("layout", "out_in") == "out_in" else 1, "bias": 0}
    for role, axis in out_axis.items():
        name = entry[role]
        rolled = np.roll(numpy_helper.to_array(initializers[name]), 1, axis=axis)
        initializers[name].CopyFrom(numpy_helper.from_array(rolled, name))
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(".shifted.tmp")
    onnx.save(model, staging)
    staging.replace(target)
    return target


def offline_probabilities(model_path: Path, images: np.ndarray) -> np.ndarray:
    """What the model file itself says, through ONNX Runtime in this process: uint8 [n, 28, 28]
    -> probabilities [n, 10], with the server's scaling (value / 255)."""
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    batch = (images.astype(np.float32) / np.float32(255.0))[:, None, :, :]
    return session.run([PROBABILITIES], {session.get_inputs()[0].name: batch})[0]
