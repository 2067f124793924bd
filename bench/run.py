"""`mnist-serve bench`: the service against the naive server and in-process ONNX Runtime.

The naive server and the service with batching off and on each run as a real process
on a loopback port. Every run then measures, one after the other: in-process ONNX
Runtime images/s at batch 1, 64 and 256, and every (server, request, concurrency)
point under load from a separate process (wrk, else bench/async_client). Runs are
repeated `--runs` times so that a slow spell on a shared machine hits all servers
alike, and each metric's median is reported. Results go to `--out` as JSON and
markdown; a full run (not `--quick`) also rewrites the generated block of
docs/benchmark.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import platform
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import onnxruntime as ort

from bench import inprocess, servers
from bench.cpu import cpu_model, machine_cpu_times
from bench.load import default_tool, run_load, tool_version, write_body
from bench.payloads import Workload, naive_json, sample_images, service_workloads
from bench.report import Point, Results, Sample, add_ratios, evaluate_targets, render_markdown, update_document
from service.config import available_cpus

logger = logging.getLogger("bench")

REPO_ROOT = Path(__file__).resolve().parent.parent
DOCUMENT = REPO_ROOT / "docs" / "benchmark.md"
ALL_SERVERS = ("naive", "batching-off", "batching-on")
ALL_WORKLOADS = ("v1-json", "v2-json", "v2-binary", "v2-binary-256")
LIMIT_BATCHES = (1, 64, 256)
PROBABILITY_TOLERANCE = 1e-3


@dataclass(frozen=True)
class BenchPlan:
    model: str
    models_dir: Path
    out_dir: Path
    duration: float = 5.0
    runs: int = 3
    concurrencies: tuple[int, ...] = (1, 16, 64)
    servers: tuple[str, ...] = ALL_SERVERS
    workloads: tuple[str, ...] = ALL_WORKLOADS  # the service's; the naive server has only its /predict
    limit_batches: tuple[int, ...] = LIMIT_BATCHES
    load_tool: str = field(default_factory=default_tool)
    warmup_s: float = 1.0
    document: Path | None = DOCUMENT

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "BenchPlan":
        plan = cls(model=args.model, models_dir=Path(args.models_dir), out_dir=Path(args.out),
                   duration=args.duration, runs=args.runs,
                   concurrencies=tuple(int(value) for value in str(args.concurrency).split(",") if value.strip()))
        if args.quick:
            plan = replace(plan, duration=min(plan.duration, 1.0), runs=1, warmup_s=0.5, document=None)
        return plan

    @property
    def model_path(self) -> Path:
        """models/<model>/<highest version>/model.onnx."""
        versions = [path for path in (self.models_dir / self.model).glob("*/model.onnx") if path.parent.name.isdigit()]
        if not versions:
            raise FileNotFoundError(f"no {self.models_dir / self.model}/<version>/model.onnx")
        return max(versions, key=lambda path: int(path.parent.name))

    def server_spec(self, name: str, port: int) -> servers.ServerSpec:
        if name == "naive":
            return servers.naive_spec(self.model_path, port)
        if name in ("batching-off", "batching-on"):
            return servers.service_spec(self.models_dir, port, self.model, batching=name == "batching-on")
        raise ValueError(f"unknown server {name!r}; choose from {', '.join(ALL_SERVERS)}")


def machine_description() -> dict[str, object]:
    return {"cpu_model": cpu_model(), "cpus": os.cpu_count(), "available_cpus": available_cpus(),
            "os": platform.platform(), "python": platform.python_version(), "onnxruntime": ort.__version__}


def measure_limit(plan: BenchPlan) -> dict[int, dict[str, float]]:
    """In-process images/s by batch size and session configuration: one run."""
    return inprocess.measure(plan.model_path, list(plan.limit_batches), min(plan.duration, 2.0))


def check_answers(server: servers.RunningServer, workload: Workload, expected_labels: np.ndarray) -> None:
    """One request before any load: 200, probabilities that sum to 1, the labels ONNX Runtime gives."""
    status, body, headers = servers.post(server.url + workload.path, workload.body, workload.content_type,
                                         workload.headers)
    if status != 200:
        raise RuntimeError(f"{server.spec.title} answered {workload.name} with {status}: {body[:500]!r}")
    probabilities = workload.decode(body, headers)
    if not np.allclose(probabilities.sum(axis=1), 1.0, atol=PROBABILITY_TOLERANCE):
        raise RuntimeError(f"{server.spec.title}: {workload.name} probabilities do not sum to 1")
    labels = probabilities.argmax(axis=1)
    if not np.array_equal(labels, expected_labels[: workload.images]):
        raise RuntimeError(f"{server.spec.title}: {workload.name} labels {labels[:10]} differ from in-process "
                           f"ONNX Runtime's {expected_labels[:10]}")


def settle(started: dict[str, servers.RunningServer]) -> None:
    for server in started.values():
        if not server.wait_idle():
            logger.warning("%s is still busy after its load stopped; the next point shares the CPU with it",
                           server.spec.title)


def measure_point(server: servers.RunningServer, workload: Workload, body_file: Path, concurrency: int,
                  plan: BenchPlan) -> Sample:
    server_before, machine_before = server.cpu_seconds(), machine_cpu_times()
    load = run_load(plan.load_tool, server.url, workload, body_file, concurrency, plan.duration)
    server_cpu_s = server.cpu_seconds() - server_before
    machine_busy_s = machine_cpu_times().busy_s - machine_before.busy_s
    if server.process.poll() is not None:
        raise RuntimeError(f"{server.spec.title} died under load:\n{server.log_tail()}")
    return Sample.from_load(load, workload.images, server_cpu_s, machine_busy_s)


@contextmanager
def running_servers(plan: BenchPlan, log_dir: Path) -> Iterator[dict[str, servers.RunningServer]]:
    with ExitStack() as stack:
        started: dict[str, servers.RunningServer] = {}
        for name in plan.servers:
            server = servers.start(plan.server_spec(name, servers.free_port()), log_dir)
            stack.callback(server.stop)
            started[name] = server
            logger.info("%s on %s (pid %d)", server.spec.title, server.url, server.pid)
        yield started


def workloads_by_server(plan: BenchPlan, images: np.ndarray) -> dict[str, list[Workload]]:
    """The naive server gets its /predict only; the service gets the plan's requests."""
    by_name = {workload.name: workload for workload in service_workloads(images, plan.model)}
    return {name: [naive_json(images[0])] if name == "naive" else [by_name[key] for key in plan.workloads]
            for name in plan.servers}


def prepare_points(started: dict[str, servers.RunningServer], workloads: dict[str, list[Workload]],
                   body_files: dict[str, Path], expected_labels: np.ndarray,
                   plan: BenchPlan) -> dict[tuple[str, str, int], tuple[Workload, Point]]:
    """Check each server's answers and warm each request up once; one empty Point per measurement."""
    points: dict[tuple[str, str, int], tuple[Workload, Point]] = {}
    for name, server in started.items():
        for workload in workloads[name]:
            check_answers(server, workload, expected_labels)
            run_load(plan.load_tool, server.url, workload, body_files[workload.name], max(plan.concurrencies),
                     plan.warmup_s)
            settle(started)
            for concurrency in plan.concurrencies:
                points[(name, workload.name, concurrency)] = (workload, Point(
                    name, server.spec.title, workload.name, workload.title, concurrency, workload.images))
    return points


def measure_runs(started: dict[str, servers.RunningServer],
                 points: dict[tuple[str, str, int], tuple[Workload, Point]], body_files: dict[str, Path],
                 plan: BenchPlan) -> dict[int, list[dict[str, float]]]:
    """`plan.runs` rounds of the in-process limit and every point; returns the limit's runs."""
    limit_runs: dict[int, list[dict[str, float]]] = {batch: [] for batch in plan.limit_batches}
    for run in range(1, plan.runs + 1):
        for batch, by_config in measure_limit(plan).items():
            limit_runs[batch].append(by_config)
            logger.info("run %d/%d in-process ONNX Runtime, batch %d: %s images/s", run, plan.runs, batch,
                        {name: round(value) for name, value in by_config.items()})
        for (name, _, concurrency), (workload, point) in points.items():
            sample = measure_point(started[name], workload, body_files[workload.name], concurrency, plan)
            settle(started)
            point.runs.append(sample)
            logger.info("run %d/%d %s %s c=%d: %.0f req/s, p99 %.1f ms, errors %d, server CPU %.2f, client CPU %.2f",
                        run, plan.runs, name, workload.name, concurrency, sample.requests_per_s, sample.p99_ms,
                        sample.errors, sample.server_cpu, sample.client_cpu)
    return limit_runs


def run_benchmark(plan: BenchPlan, images: np.ndarray | None = None) -> Results:
    """`images`: uint8 digits [n >= 256, 28, 28] for the bodies; default the MNIST test set's."""
    stamp = dt.datetime.now().astimezone()
    images = sample_images() if images is None else images
    expected_labels = inprocess.predict_labels(plan.model_path, images)
    workloads = workloads_by_server(plan, images)
    body_files = {workload.name: write_body(workload, plan.out_dir / "bodies")
                  for group in workloads.values() for workload in group}
    with running_servers(plan, plan.out_dir / f"logs-{stamp:%Y%m%d-%H%M%S}") as started:
        points = prepare_points(started, workloads, body_files, expected_labels, plan)
        limit_runs = measure_runs(started, points, body_files, plan)

    settings = {"model": plan.model, "model_path": str(plan.model_path), "duration_s": plan.duration,
                "runs": plan.runs, "concurrency": list(plan.concurrencies), "load_tool": tool_version(plan.load_tool)}
    results = Results(date=f"{stamp:%Y-%m-%d %H:%M %Z}", machine=machine_description(), settings=settings,
                      limit_runs=limit_runs, points=[point for _, point in points.values()])
    add_ratios(results)
    results.targets = evaluate_targets(results)
    return results


def write_results(results: Results, plan: BenchPlan) -> tuple[Path, Path]:
    plan.out_dir.mkdir(parents=True, exist_ok=True)
    stem = plan.out_dir / f"bench-{dt.datetime.now():%Y%m%d-%H%M%S}"
    json_path, markdown_path = stem.with_suffix(".json"), stem.with_suffix(".md")
    json_path.write_text(json.dumps(results.to_json(), indent=2) + "\n")
    markdown = render_markdown(results)
    markdown_path.write_text(markdown)
    if plan.document is not None:
        update_document(plan.document, markdown)
    return json_path, markdown_path


def main(args: argparse.Namespace) -> int:
    plan = BenchPlan.from_args(args)
    results = run_benchmark(plan)
    json_path, markdown_path = write_results(results, plan)
    sys.stdout.write(render_markdown(results))
    print(f"\nresults: {json_path}\n         {markdown_path}" +
          (f"\ndocument: {plan.document}" if plan.document is not None else ""))
    return 0
