"""Float vs int8 speed in-process, with the service's session options (service.runtime.ModelRuntime):
rounds that alternate the two models in one process, medians over rounds, and a per-operator
profile from ONNX Runtime's profiling JSON."""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from contract.spec import INPUT_NAME, PROBABILITIES


def _images_per_second(run: Any, batch: np.ndarray, outputs: list[str], repeats: int) -> tuple[float, float]:
    """Images per second of wall time, and per second of this process's CPU time (all threads):
    on a machine others load, the second counts the work and not the waiting for a core."""
    run(batch, outputs)
    started, cpu_started = time.perf_counter(), time.process_time()
    for _ in range(repeats):
        run(batch, outputs)
    images = len(batch) * repeats
    return images / (time.perf_counter() - started), images / max(time.process_time() - cpu_started, 1e-9)


def _latency_ms(run: Any, image: np.ndarray, outputs: list[str], repeats: int) -> float:
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        run(image, outputs)
        timings.append(time.perf_counter() - started)
    return 1000 * statistics.median(timings)


def compare_speed(models: dict[str, Path], images: np.ndarray, rounds: int = 7, batch_size: int = 256,
                  repeats: int = 5, threads: int = 2) -> dict[str, Any]:
    """Median over `rounds` of batch-`batch_size` images/s (asking for probabilities, as predict does,
    and for every output, as activations does; per CPU-second too) and of single-image latency.
    Each round runs every model in turn, starting with a different one, so that a busy machine
    slows all of them alike."""
    from service.runtime import ModelRuntime
    from training.common import to_input

    runtimes = {label: ModelRuntime(path.read_bytes(), "cpu", threads, spinning=False)
                for label, path in models.items()}
    batch, image = to_input(images[:batch_size]), to_input(images[:1])
    every_output = {label: runtime.output_names for label, runtime in runtimes.items()}
    samples: dict[str, dict[str, list[float]]] = {label: defaultdict(list) for label in runtimes}
    labels = list(runtimes)
    for round_index in range(rounds):
        for label in labels[round_index % len(labels):] + labels[:round_index % len(labels)]:
            run = runtimes[label].run
            wall, cpu = _images_per_second(run, batch, [PROBABILITIES], repeats)
            samples[label]["images_per_s"].append(wall)
            samples[label]["images_per_cpu_s"].append(cpu)
            all_outputs, _ = _images_per_second(run, batch, every_output[label], repeats)
            samples[label]["images_per_s_all_outputs"].append(all_outputs)
            samples[label]["latency_ms_batch_1"].append(_latency_ms(run, image, [PROBABILITIES], 20 * repeats))
    result: dict[str, Any] = {
        "batch_size": batch_size, "rounds": rounds, "intra_op_threads": threads,
        "load_average_after": [round(load, 2) for load in os.getloadavg()],
        "models": {label: {key: round(statistics.median(values), 2) for key, values in measured.items()}
                   for label, measured in samples.items()},
    }
    return result


def profile_operators(path: Path, images: np.ndarray, runs: int = 5, threads: int = 2) -> dict[str, dict[str, float]]:
    """Milliseconds per batch and share of kernel time of each operator type, from ONNX Runtime's
    profiling JSON over `runs` runs of `images` after a warm-up: each node's median over the runs
    (a run another process preempted does not count more than once), summed per operator type."""
    import onnxruntime as ort

    from training.common import to_input

    batch = to_input(images)
    with tempfile.TemporaryDirectory(prefix="mnist-profile-") as tmp:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "profile")
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        session.run([PROBABILITIES], {INPUT_NAME: batch})
        for _ in range(runs):
            session.run([PROBABILITIES], {INPUT_NAME: batch})
        events = json.loads(Path(session.end_profiling()).read_text())
    first_run = min((event for event in events if event.get("name") == "model_run"), key=lambda event: event["ts"])
    warmed_up = first_run["ts"] + first_run["dur"]  # the warm-up run is profiled too: leave it out
    durations: dict[tuple[str, str], list[float]] = defaultdict(list)
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time") and event["ts"] >= warmed_up:
            durations[(event["args"]["op_name"], event["name"])].append(event["dur"] / 1000)
    milliseconds: dict[str, float] = defaultdict(float)
    nodes: dict[str, int] = defaultdict(int)
    for (operator, _), values in durations.items():
        milliseconds[operator] += statistics.median(values)
        nodes[operator] += 1
    total = sum(milliseconds.values())
    return {operator: {"ms_per_batch": round(spent, 2), "share": round(spent / total, 3), "nodes": nodes[operator]}
            for operator, spent in sorted(milliseconds.items(), key=lambda item: -item[1])}


def speed_report(float_path: Path, int8_path: Path, data_dir: str | Path | None, rounds: int, profile: bool,
                 threads: int = 2) -> dict[str, Any]:
    """`compare_speed` over `rounds` rounds (0: skip) and, with `profile`, both models' per-operator
    profiles at batch 256, on MNIST test images."""
    from training.data import load_split

    files = {"float": float_path, "int8": int8_path}
    images = load_split("test", data_dir).images
    report: dict[str, Any] = {}
    if rounds:
        report["speed"] = compare_speed(files, images, rounds=rounds, threads=threads)
    if profile:
        report["profile"] = {label: profile_operators(file, images[:256], runs=9, threads=threads)
                             for label, file in files.items()}
    return report

