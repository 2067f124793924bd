"""The limit: ONNX Runtime called in-process, no HTTP, no copies beyond the input batch."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from service.config import available_cpus

INPUT_NAME = "image"
OUTPUT_NAME = "probabilities"
WARMUP_CALLS = 3


def create_session(model_path: Path, threads: int = 0) -> ort.InferenceSession:
    """A CPU session with as many intra-op threads as the service gives its own by default."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or available_cpus()
    return ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])


def images_per_second(session: ort.InferenceSession, batch_size: int, duration: float) -> float:
    """Run batches of `batch_size` back to back for about `duration` seconds (at least one call)."""
    batch = np.random.default_rng(0).random((batch_size, 1, 28, 28), dtype=np.float32)
    for _ in range(WARMUP_CALLS):
        session.run([OUTPUT_NAME], {INPUT_NAME: batch})
    calls, started = 0, time.perf_counter()
    while True:
        session.run([OUTPUT_NAME], {INPUT_NAME: batch})
        calls += 1
        elapsed = time.perf_counter() - started
        if elapsed >= duration:
            return calls * batch_size / elapsed


def measure(model_path: Path, batch_sizes: list[int], duration: float) -> dict[int, float]:
    """Images/s at each batch size, one fresh session for all of them."""
    session = create_session(model_path)
    return {batch_size: images_per_second(session, batch_size, duration) for batch_size in batch_sizes}


def predict_labels(model_path: Path, images: np.ndarray) -> np.ndarray:
    """The labels in-process ONNX Runtime gives uint8 images [n, 28, 28] scaled to 0..1."""
    batch = (images.astype(np.float32) / 255.0).reshape(-1, 1, 28, 28)
    (probabilities,) = create_session(model_path).run([OUTPUT_NAME], {INPUT_NAME: batch})
    return probabilities.argmax(axis=1)
