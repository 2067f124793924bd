"""`mnist-serve bench`: the service against the naive server, in-process ONNX Runtime and, with
`--anchors`, MLServer, KServe's model server and Triton (bench/anchors/).

The naive server, the service with batching off and on, and each anchor whose environment is
built run as real processes on loopback ports; each must answer as in-process ONNX Runtime does
before it is measured (an anchor that does not is skipped, with the reason in the report). Every
run then measures, one after the other: in-process ONNX Runtime images/s at batch 1, 64 and 256,
and every (server, request, concurrency) point of bench/matrix.py under load from a separate
process (wrk, else bench/async_client). Runs are
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
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort

from bench import grpc_load, inprocess, servers
from bench.anchor_report import evaluate_anchor_targets
from bench.anchors.setup import ANCHORS_ROOT
from bench.anchors.specs import Environment, anchor_spec, find_environment
from bench.cpu import cpu_model, machine_cpu_times
from bench.load import LoadResult, default_tool, run_load, tool_version, write_body
from bench.matrix import ALL_REQUESTS, SERVICE_SERVERS, requests_for
from bench.payloads import INT8_SUFFIX, Workload, all_workloads, sample_images, v2_json
from bench.report import (
    Point,
    Results,
    Sample,
    add_ratios,
    evaluate_targets,
    render_markdown,
    update_document,
)
from contract import store
from service.config import available_cpus

logger = logging.getLogger("bench")

REPO_ROOT = Path(__file__).resolve().parent.parent
DOCUMENT = REPO_ROOT / "docs" / "benchmark.md"
ALL_SERVERS = SERVICE_SERVERS
ALL_WORKLOADS = ALL_REQUESTS
LIMIT_BATCHES = (1, 64, 256)
PROBABILITY_TOLERANCE = 1e-4  # against in-process ONNX Runtime's probabilities, image by image
CHECK_IMAGES = 8  # a V2 server also answers one request with this many images before any load


@dataclass(frozen=True)
class BenchPlan:
    model: str
    models_dir: Path
    out_dir: Path
    duration: float = 5.0
    runs: int = 3
    concurrencies: tuple[int, ...] = (1, 16, 64)
    servers: tuple[str, ...] = ALL_SERVERS
    workloads: tuple[str, ...] = ALL_WORKLOADS  # a filter on bench/matrix.py; the naive server keeps its /predict
    anchors: tuple[str, ...] = ()
    anchors_root: Path = ANCHORS_ROOT
    limit_batches: tuple[int, ...] = LIMIT_BATCHES
    load_tool: str = field(default_factory=default_tool)
    warmup_s: float = 1.0
    document: Path | None = DOCUMENT

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "BenchPlan":
        plan = cls(model=args.model, models_dir=Path(args.models_dir), out_dir=Path(args.out),
                   duration=args.duration, runs=args.runs,
                   concurrencies=tuple(int(value) for value in str(args.concurrency).split(",") if value.strip()),
                   anchors=tuple(getattr(args, "anchors", None) or ()))
        if args.quick:
            plan = replace(plan, duration=min(plan.duration, 1.0), runs=1, warmup_s=0.5, document=None)
        return plan

    @property
    def model_path(self) -> Path:
        return self.path_of(self.model)

    def path_of(self, model: str) -> Path:
        """models/<model>/<highest version>/model.onnx."""
        found = store.scan(self.models_dir, only=model).get(model)
        if not found:
            raise FileNotFoundError(f"no {self.models_dir / model}/<version>/model.onnx")
        return found[max(found)]

    @property
    def int8_model(self) -> str | None:
        """The model's INT8 variant, when the models directory has one (mnist-serve quantize)."""
        name = self.model + INT8_SUFFIX
        return name if store.scan(self.models_dir, only=name) else None

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


def grpc_target(server: servers.RunningServer) -> str:
    return f"{servers.HOST}:{server.spec.env['MNIST_SERVE_GRPC_PORT']}"


def ask(server: servers.RunningServer, workload: Workload) -> tuple[int, bytes, dict[str, str]]:
    """One request outside the load generator: status, body, headers."""
    if workload.protocol == "grpc":
        try:
            return 200, grpc_load.infer_once(grpc_target(server), workload.body), {}
        except grpc.RpcError as error:
            return 500, str(error).encode(), {}
    return servers.post(server.url + workload.path, workload.body, workload.content_type, workload.headers)


def drive(server: servers.RunningServer, workload: Workload, body_file: Path, concurrency: int,
          duration: float, tool: str) -> LoadResult | grpc_load.GrpcLoadResult:
    """Load from a separate process: wrk (or the asyncio client) for HTTP, bench.grpc_load for gRPC."""
    if workload.protocol == "grpc":
        return grpc_load.run_load(grpc_target(server), workload.body, concurrency, duration, body_file=body_file)
    return run_load(tool, server.url, workload, body_file, concurrency, duration)


def check_answers(server: servers.RunningServer, workload: Workload, reference: np.ndarray) -> None:
    """One request: 200, and the probabilities in-process ONNX Runtime gives the same images
    (`reference`: [n, 10] for the first n images), label by label and within PROBABILITY_TOLERANCE."""
    status, body, headers = ask(server, workload)
    if status != 200:
        raise RuntimeError(f"{server.spec.title} answered {workload.name} with {status}: {body[:500]!r}")
    try:
        probabilities = workload.decode(body, headers)
    except (ValueError, KeyError, TypeError, StopIteration) as error:
        raise RuntimeError(f"{server.spec.title}: {workload.name} answer cannot be read ({error!r}): "
                           f"{body[:300]!r}") from error
    expected = reference[: workload.images]
    labels, expected_labels = probabilities.argmax(axis=1), expected.argmax(axis=1)
    if not np.array_equal(labels, expected_labels):
        raise RuntimeError(f"{server.spec.title}: {workload.name} labels {labels[:10]} differ from in-process "
                           f"ONNX Runtime's {expected_labels[:10]}")
    worst = float(np.abs(probabilities - expected).max())
    if worst > PROBABILITY_TOLERANCE:
        raise RuntimeError(f"{server.spec.title}: {workload.name} probabilities differ from in-process ONNX "
                           f"Runtime's by up to {worst:.2g} (tolerance {PROBABILITY_TOLERANCE:g})")


def verify_server(server: servers.RunningServer, workloads: list[Workload], images: np.ndarray,
                  references: dict[str, np.ndarray], model: str) -> None:
    """Every request the server will be sent (each against in-process ONNX Runtime on the model it
    names), and for a V2 server one more with CHECK_IMAGES other images."""
    for workload in workloads:
        check_answers(server, workload, references[workload.model])
    if any(workload.path.startswith("/v2/") for workload in workloads):
        check = v2_json(images[CHECK_IMAGES: 2 * CHECK_IMAGES], model)
        check_answers(server, check, references[model][CHECK_IMAGES: 2 * CHECK_IMAGES])


def settle(started: dict[str, servers.RunningServer]) -> None:
    for server in started.values():
        if not server.wait_idle():
            logger.warning("%s is still busy after its load stopped; the next point shares the CPU with it",
                           server.spec.title)


def measure_point(server: servers.RunningServer, workload: Workload, body_file: Path, concurrency: int,
                  plan: BenchPlan) -> Sample:
    server_before, machine_before = server.cpu_seconds(), machine_cpu_times()
    load = drive(server, workload, body_file, concurrency, plan.duration, plan.load_tool)
    server_cpu_s = server.cpu_seconds() - server_before
    machine_busy_s = machine_cpu_times().busy_s - machine_before.busy_s
    if server.process.poll() is not None:
        raise RuntimeError(f"{server.spec.title} died under load:\n{server.log_tail()}")
    return Sample.from_load(load, workload.images, server_cpu_s, machine_busy_s)


@dataclass
class Started:
    servers: dict[str, servers.RunningServer] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # anchor -> one line: why, and how to build it


def start_anchor(plan: BenchPlan, environment: Environment, log_dir: Path) -> servers.RunningServer:
    """The anchor runs in its own folder (for its configuration files), so every path it gets is absolute."""
    spec = anchor_spec(environment, plan.model, plan.model_path.resolve(), servers.free_port(),
                       (log_dir / environment.anchor).resolve())
    return servers.start(spec, log_dir)


def last_line(text: str) -> str:
    return next((line.strip() for line in reversed(text.splitlines()) if line.strip()), "")


@contextmanager
def running_servers(plan: BenchPlan, log_dir: Path) -> Iterator[Started]:
    """The plan's servers, then its anchors; an anchor that is not built or does not start is skipped."""
    with ExitStack() as stack:
        started = Started()
        for name in plan.servers:
            server = servers.start(plan.server_spec(name, servers.free_port()), log_dir)
            stack.callback(server.stop)
            started.servers[name] = server
            logger.info("%s on %s (pid %d)", server.spec.title, server.url, server.pid)
        for anchor in plan.anchors:
            environment = find_environment(anchor, plan.anchors_root)
            if isinstance(environment, str):
                started.skipped[anchor] = environment
                logger.warning("%s", environment)
                continue
            try:
                server = start_anchor(plan, environment, log_dir)
            except RuntimeError as error:
                started.skipped[anchor] = f"{anchor}: skipped, it did not start ({last_line(str(error))}); " \
                                          f"its log: {log_dir / anchor}.log"
                logger.warning("%s\n%s", started.skipped[anchor], error)
                continue
            stack.callback(server.stop)
            started.servers[anchor] = server
            logger.info("%s on %s (pid %d)", server.spec.title, server.url, server.pid)
        yield started


def workloads_by_server(plan: BenchPlan, images: np.ndarray) -> dict[str, list[Workload]]:
    """Each server's requests (bench/matrix.py), limited to the plan's `workloads`; the INT8 ones
    only where the INT8 variant of the model is in the models directory."""
    by_name = all_workloads(images, plan.model, plan.int8_model)
    return {name: [by_name[key] for key in requests_for(name, plan.workloads) if key in by_name]
            for name in (*plan.servers, *plan.anchors)}


def verify_servers(started: Started, workloads: dict[str, list[Workload]], images: np.ndarray,
                   references: dict[str, np.ndarray], plan: BenchPlan) -> None:
    """Each server must answer as in-process ONNX Runtime does; an anchor that does not is stopped and skipped."""
    for name, server in list(started.servers.items()):
        try:
            verify_server(server, workloads[name], images, references, plan.model)
        except RuntimeError as error:
            if name not in plan.anchors:
                raise
            server.stop()
            del started.servers[name]
            started.skipped[name] = f"{name}: skipped, it answered wrong: {error}"
            logger.warning("%s", started.skipped[name])


def prepare_points(started: dict[str, servers.RunningServer], workloads: dict[str, list[Workload]],
                   body_files: dict[str, Path], plan: BenchPlan) -> dict[tuple[str, str, int], tuple[Workload, Point]]:
    """Warm each request up once; one empty Point per measurement."""
    points: dict[tuple[str, str, int], tuple[Workload, Point]] = {}
    for name, server in started.items():
        for workload in workloads[name]:
            drive(server, workload, body_files[workload.name], max(plan.concurrencies), plan.warmup_s,
                  plan.load_tool)
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
    stamp, started_s = dt.datetime.now().astimezone(), time.monotonic()
    images = sample_images() if images is None else images
    workloads = workloads_by_server(plan, images)
    references = {model: inprocess.predict_probabilities(plan.path_of(model), images)
                  for model in {workload.model for group in workloads.values() for workload in group}}
    body_files = {workload.name: write_body(workload, plan.out_dir / "bodies")
                  for group in workloads.values() for workload in group}
    with running_servers(plan, plan.out_dir / f"logs-{stamp:%Y%m%d-%H%M%S}") as started:
        verify_servers(started, workloads, images, references, plan)
        points = prepare_points(started.servers, workloads, body_files, plan)
        limit_runs = measure_runs(started.servers, points, body_files, plan)
        titles = {name: server.spec.title for name, server in started.servers.items()}

    settings = {"model": plan.model, "model_path": str(plan.model_path), "duration_s": plan.duration,
                "runs": plan.runs, "concurrency": list(plan.concurrencies), "load_tool": tool_version(plan.load_tool),
                "servers": titles, "skipped": started.skipped, "elapsed_s": round(time.monotonic() - started_s)}
    results = Results(date=f"{stamp:%Y-%m-%d %H:%M %Z}", machine=machine_description(), settings=settings,
                      limit_runs=limit_runs, points=[point for _, point in points.values()])
    add_ratios(results)
    results.targets = evaluate_targets(results)
    results.anchor_targets = evaluate_anchor_targets(results)
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
