"""`mnist-serve bench --scaling`: how requests/s grows with the cores given to the service.

The service runs under `taskset` on the first n cores with `--workers n` (one ONNX Runtime thread
each, as `threads` 0 gives a worker under that affinity), and wrk runs on the cores left, so the
two never share one. On a machine with C cores that measures n = 1 .. C-1; two more rows show
what sharing does: n workers on one core, and the service on every core with wrk beside it.
Each point is the median of `runs` runs of single-image V2 binary requests at concurrency 64.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from bench import servers
from bench.load import default_tool, run_load, write_body
from bench.payloads import sample_images, v2_binary

logger = logging.getLogger("bench.scaling")
CONCURRENCY = 64


@dataclass(frozen=True)
class Layout:
    server_cpus: tuple[int, ...]
    workers: int
    client_cpus: tuple[int, ...]

    @property
    def title(self) -> str:
        shared = " (shared with wrk)" if set(self.server_cpus) & set(self.client_cpus) else ""
        return f"{self.workers} worker{'s' if self.workers > 1 else ''} on {len(self.server_cpus)} core" + \
            ("s" if len(self.server_cpus) > 1 else "") + shared


@dataclass(frozen=True)
class ScalingPoint:
    layout: Layout
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int


def layouts(cpus: list[int]) -> list[Layout]:
    """Dedicated cores for n = 1 .. C-1, then n workers on one core, then everything shared."""
    dedicated = [Layout(tuple(cpus[:n]), n, tuple(cpus[n:])) for n in range(1, len(cpus))]
    if len(cpus) < 2:
        return [Layout(tuple(cpus), 1, tuple(cpus))]
    crowded = Layout((cpus[0],), len(cpus), tuple(cpus[1:]))
    shared = Layout(tuple(cpus), len(cpus), tuple(cpus))
    return [*dedicated, crowded, shared]


def _cpu_list(cpus: tuple[int, ...]) -> str:
    return ",".join(map(str, cpus))


def measure(layout: Layout, models_dir: Path, model: str, duration: float, runs: int, work: Path) -> ScalingPoint:
    workload = v2_binary(sample_images()[:1], model)
    body_file = write_body(workload, work)
    port = servers.free_port()
    spec = servers.service_spec(models_dir, port, model, batching=True)
    pinned = servers.ServerSpec(f"scaling-{layout.workers}w-{_cpu_list(layout.server_cpus)}", layout.title, port,
                                ["taskset", "-c", _cpu_list(layout.server_cpus), *spec.argv, "--workers",
                                 str(layout.workers)], spec.env, spec.ready_path)
    server = servers.start(pinned, work / "logs")
    try:
        server.wait_idle()
        run_load(default_tool(), server.url, workload, body_file, CONCURRENCY, 2.0)  # warm-up
        loads = [run_load(default_tool(), server.url, workload, body_file, CONCURRENCY, duration,
                          cpus=_cpu_list(layout.client_cpus)) for _ in range(runs)]
    finally:
        server.stop()
    median = sorted(loads, key=lambda load: load.requests_per_s)[len(loads) // 2]
    return ScalingPoint(layout, median.requests_per_s, median.latency_ms["p50"], median.latency_ms["p99"],
                        sum(load.errors for load in loads))


def report(points: list[ScalingPoint]) -> str:
    base = points[0].requests_per_s or 1.0
    lines = ["| service | wrk on cores | requests/s | × 1 worker | p50 ms | p99 ms | errors |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for point in points:
        lines.append(f"| {point.layout.title} (cores {_cpu_list(point.layout.server_cpus)}) | "
                     f"{_cpu_list(point.layout.client_cpus)} | {point.requests_per_s:,.0f} | "
                     f"{point.requests_per_s / base:.2f} | {point.p50_ms:.2f} | {point.p99_ms:.2f} | {point.errors} |")
    return "\n".join(lines)


def main(models_dir: Path, model: str, duration: float, runs: int, out: Path) -> int:
    cpus = sorted(os.sched_getaffinity(0))
    out.mkdir(parents=True, exist_ok=True)
    points: list[ScalingPoint] = []
    with tempfile.TemporaryDirectory(prefix="mnist-serve-scaling-") as work:
        for layout in layouts(cpus):
            logger.info("scaling: %s, wrk on cores %s", layout.title, _cpu_list(layout.client_cpus))
            points.append(measure(layout, models_dir, model, duration, runs, Path(work)))
            logger.info("  %.0f requests/s, p99 %.1f ms", points[-1].requests_per_s, points[-1].p99_ms)
    table = report(points)
    (out / "scaling.json").write_text(json.dumps({"cpus": cpus, "model": model, "concurrency": CONCURRENCY,
                                                  "points": [asdict(point) for point in points]}, indent=2))
    (out / "scaling.md").write_text(table + "\n")
    sys.stdout.write(table + "\n")
    return 0
