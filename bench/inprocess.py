"""The limit: ONNX Runtime called in-process, no HTTP, no copies beyond the input batch.

Which session options are fastest depends on the machine and on what else runs on it:
on two cores shared with other work, two intra-op threads that spin while they wait
lose to one thread. So the limit is the best of a few session configurations, and
each one's images/s is kept. Each runs the graph with only the predictions as outputs, as the
service does for requests that want nothing else (service.runtime.predictions_only).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from service.config import available_cpus
from service.runtime import predictions_only

INPUT_NAME = "image"
OUTPUT_NAME = "probabilities"
WARMUP_CALLS = 3


@dataclass(frozen=True)
class SessionConfig:
    threads: int  # intra-op threads; 0: the CPUs this process may use
    spinning: bool  # ONNX Runtime's default: idle pool threads spin before they sleep

    @property
    def name(self) -> str:
        threads = self.threads or available_cpus()
        if threads == 1:
            return "1 thread"
        return f"{threads} threads" + ("" if self.spinning else ", no spinning")


CONFIGS = (SessionConfig(0, spinning=True), SessionConfig(0, spinning=False), SessionConfig(1, spinning=True))


def create_session(model_path: Path, config: SessionConfig = CONFIGS[0]) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = config.threads or available_cpus()
    if not config.spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    model_bytes = model_path.read_bytes()
    graph = predictions_only(model_bytes) or model_bytes
    return ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])


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


def distinct_configs() -> list[SessionConfig]:
    """CONFIGS without repeats (on one CPU all three are a single thread)."""
    by_name: dict[str, SessionConfig] = {}
    for config in CONFIGS:
        by_name.setdefault(config.name, config)
    return list(by_name.values())


def measure(model_path: Path, batch_sizes: list[int], duration: float) -> dict[int, dict[str, float]]:
    """Images/s by batch size and session configuration, `duration` seconds each."""
    results: dict[int, dict[str, float]] = {batch_size: {} for batch_size in batch_sizes}
    for config in distinct_configs():
        session = create_session(model_path, config)
        for batch_size in batch_sizes:
            results[batch_size][config.name] = images_per_second(session, batch_size, duration)
        del session
    return results


def predict_probabilities(model_path: Path, images: np.ndarray) -> np.ndarray:
    """The probabilities [n, 10] in-process ONNX Runtime gives uint8 images [n, 28, 28] scaled to 0..1."""
    batch = (images.astype(np.float32) / 255.0).reshape(-1, 1, 28, 28)
    (probabilities,) = create_session(model_path).run([OUTPUT_NAME], {INPUT_NAME: batch})
    return probabilities


def predict_labels(model_path: Path, images: np.ndarray) -> np.ndarray:
    """The labels in-process ONNX Runtime gives uint8 images [n, 28, 28] scaled to 0..1."""
    return predict_probabilities(model_path, images).argmax(axis=1)
