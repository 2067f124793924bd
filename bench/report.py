"""From measured runs to the results: medians, ratios, the issue's targets, JSON and markdown."""

from __future__ import annotations

import re
import statistics
from pathlib import Path

from bench.anchor_report import render_anchor_section
from bench.results import (
    Point,
    Results,
    Sample,
    Target,
    median_sample,
    met_text,
    results_from_json,
)

__all__ = ["Point", "Results", "Sample", "Target", "median_sample", "results_from_json", "add_ratios",
           "evaluate_targets", "render_markdown", "update_document"]

BASELINE_SERVER = "naive"
BASELINE_WORKLOAD = "naive-json"
TARGET_SERVER = "batching-on"
BUSY_MACHINE_CORES = 0.25  # "other CPU" above this is called out under the table's heading
DOC_START = "<!-- bench:start -->"
DOC_END = "<!-- bench:end -->"


def limit_for(limit: dict[int, float], images_per_request: int) -> float | None:
    """The in-process images/s at the request's batch size, else at the nearest one measured."""
    if not limit:
        return None
    return limit[min(limit, key=lambda batch: abs(batch - images_per_request))]


def add_ratios(results: Results) -> None:
    """images/s against the naive server at the same concurrency and against in-process ONNX Runtime."""
    for point in results.points:
        baseline = results.find(BASELINE_SERVER, BASELINE_WORKLOAD, point.concurrency)
        if baseline is not None and baseline.median.images_per_s:
            point.vs_naive = point.median.images_per_s / baseline.median.images_per_s
        ceiling = limit_for(results.limit, point.images_per_request)
        if ceiling:
            point.vs_limit = point.median.images_per_s / ceiling


def _ratio_target(results: Results, workload: str, concurrency: int, factor: float) -> Target:
    title = f"{workload} at concurrency {concurrency}: req/s ≥ {factor:g}× naive"
    point = results.find(TARGET_SERVER, workload, concurrency)
    if point is None or point.vs_naive is None:
        return Target(title, "not measured", f"{factor:g}×", None)
    return Target(title, f"{point.vs_naive:.2f}× ({point.median.requests_per_s:,.0f} req/s)", f"{factor:g}×",
                  point.vs_naive >= factor)


def _latency_target(results: Results, workload: str, concurrency: int, percentile: str) -> Target:
    title = f"{workload} at concurrency {concurrency}: {percentile} ≤ naive's"
    point = results.find(TARGET_SERVER, workload, concurrency)
    baseline = results.find(BASELINE_SERVER, BASELINE_WORKLOAD, concurrency)
    if point is None or baseline is None or not baseline.median.requests_per_s:
        return Target(title, "not measured", "naive's", None)
    measured = getattr(point.median, f"{percentile}_ms")
    required = getattr(baseline.median, f"{percentile}_ms")
    if not point.median.requests_per_s:  # no response within the point: its percentiles read 0
        return Target(title, "no answer within the point", f"≤ {required:.2f} ms", False)
    return Target(title, f"{measured:.2f} ms", f"≤ {required:.2f} ms", measured <= required)


def _batch_target(results: Results, workload: str, share: float) -> Target:
    title = f"{workload}: images/s ≥ {share:.0%} of in-process (best concurrency)"
    points = [point for point in results.points if point.server == TARGET_SERVER and point.workload == workload]
    if not points or points[0].vs_limit is None:
        return Target(title, "not measured", f"{share:.0%}", None)
    best = max(points, key=lambda point: point.median.images_per_s)
    return Target(title, f"{best.vs_limit:.0%} ({best.median.images_per_s:,.0f} images/s at c={best.concurrency})",
                  f"≥ {share:.0%}", best.vs_limit >= share)


def _grpc_target(results: Results, concurrency: int = 64) -> Target:
    title = f"grpc at concurrency {concurrency}: req/s ≥ v2-binary's, p99 lower"
    grpc, binary = (results.find(TARGET_SERVER, workload, concurrency) for workload in ("grpc", "v2-binary"))
    if grpc is None or binary is None or not binary.median.requests_per_s:
        return Target(title, "not measured", "v2-binary's", None)
    measured, required = grpc.median, binary.median
    return Target(title, f"{measured.requests_per_s:,.0f} req/s, p99 {measured.p99_ms:.1f} ms",
                  f"≥ {required.requests_per_s:,.0f} req/s, p99 < {required.p99_ms:.1f} ms",
                  measured.requests_per_s >= required.requests_per_s and 0 < measured.p99_ms < required.p99_ms)


def evaluate_targets(results: Results) -> list[Target]:
    """The issues' targets that compare the service with itself and the naive server, with batching on."""
    return [
        _ratio_target(results, "v1-json", 64, 2.0),
        _latency_target(results, "v1-json", 64, "p99"),
        _ratio_target(results, "v2-binary", 64, 3.0),
        _batch_target(results, "v2-binary-256", 0.9),
        *(_latency_target(results, workload, 1, "p50") for workload in ("v1-json", "v2-json", "v2-binary")),
        _grpc_target(results),
    ]


def _ms(value: float) -> str:
    return f"{value:.2f}" if value < 10 else f"{value:.1f}"


def _ratio(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}×"


def _background_load(results: Results) -> list[str]:
    """A line on the CPU that other processes took while the points ran, when they took a noticeable share."""
    others = [sample.other_cpu for point in results.points for sample in point.runs]
    if not others or max(others) < BUSY_MACHINE_CORES:
        return []
    return [f"**Other processes kept {statistics.mean(others):.2f} cores busy on average during the load points "
            f"(up to {max(others):.2f}): every number here is lower than on an idle machine.**"]


def _limit_table(results: Results) -> list[str]:
    by_config = results.limit_by_config
    names = list(next(iter(by_config.values()), {}))
    return [
        "| batch | images/s | " + " | ".join(names) + " |",
        "|---:|---:|" + "---:|" * len(names),
        *(f"| {batch} | {results.limit[batch]:,.0f} | " + " | ".join(f"{values[name]:,.0f}" for name in names) + " |"
          for batch, values in by_config.items()),
    ]


def render_markdown(results: Results) -> str:
    machine, settings = results.machine, results.settings
    lines = [
        f"Run on {results.date}: {machine['cpu_model']}, {machine['cpus']} CPUs "
        f"({machine['available_cpus']} usable), {machine['os']}; Python {machine['python']}, "
        f"ONNX Runtime {machine['onnxruntime']}; load from {settings['load_tool']}.",
        f"Model `{settings['model']}`; median of {settings['runs']} run(s) of {settings['duration_s']:g} s per point; "
        f"server, load generator and anything else on the machine share the same cores"
        + (f"; the whole run took {settings['elapsed_s'] / 60:.1f} minutes." if "elapsed_s" in settings else "."),
        *_background_load(results),
        "",
        "In-process ONNX Runtime, the limit (no HTTP; the best session configuration counts):",
        "",
        *_limit_table(results),
        "",
        *render_anchor_section(results),
        "| server | request | conc. | req/s | images/s | p50 ms | p95 ms | p99 ms | errors | server CPU | client CPU "
        "| other CPU | × naive | × in-process |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for point in results.points:
        median = point.median
        lines.append(
            f"| {point.server_title} | {point.workload_title} | {point.concurrency} | {median.requests_per_s:,.0f} "
            f"| {median.images_per_s:,.0f} | {_ms(median.p50_ms)} | {_ms(median.p95_ms)} | {_ms(median.p99_ms)} "
            f"| {median.errors:.0f} | {median.server_cpu:.2f} | {median.client_cpu:.2f} | {median.other_cpu:.2f} "
            f"| {_ratio(point.vs_naive)} | {_ratio(point.vs_limit)} |")
    lines += [
        "",
        "CPU columns are cores busy on average (1.00 = one core all the time); \"other\" is the rest of the machine. "
        "× naive: images/s over the naive server's at the same concurrency; × in-process: images/s over in-process "
        "ONNX Runtime's at the request's own batch size.",
        "",
        "| target (service, batching on) | measured | required | met |",
        "|---|---|---|---|",
        *(f"| {target.title} | {target.measured} | {target.required} | {met_text(target.met)} |"
          for target in results.targets),
    ]
    return "\n".join(lines) + "\n"


def update_document(path: Path, markdown: str) -> None:
    """Replace the generated block of `path` (between the bench markers), or append one."""
    block = f"{DOC_START}\n{markdown}{DOC_END}"
    text = path.read_text() if path.exists() else ""
    if DOC_START in text and DOC_END in text:
        text = re.sub(re.escape(DOC_START) + r".*?" + re.escape(DOC_END), lambda _: block, text, flags=re.DOTALL)
    else:
        text = (text.rstrip() + "\n\n" if text else "") + block + "\n"
    path.write_text(text)
