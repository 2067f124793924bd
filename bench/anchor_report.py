"""The anchors beside the service: issue 18's table, with ratios to the best anchor, and its targets.

"The best anchor" is chosen per figure: the anchor with the most requests/s (or images/s) at that
point, or the lowest p50. Its figures come from the same run as the service's (medians of --runs).
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.matrix import ANCHORS, BATCH_REQUEST_IMAGES
from bench.results import Point, Results, Target, met_text

SERVICE = "batching-on"
NAIVE = "naive"
LOW_CONCURRENCY = 1
HIGH_CONCURRENCY = 64
BATCH_REQUESTS = (f"v2-binary-{BATCH_REQUEST_IMAGES}", f"v2-json-{BATCH_REQUEST_IMAGES}")  # the first one measured
THROUGHPUT_FACTOR = 1.5
BATCH_SHARE = 0.95


@dataclass(frozen=True)
class Column:
    title: str
    requests: tuple[str, ...]  # the first one the server was sent counts
    concurrency: int | None  # None: the concurrency with the most images/s
    metric: str  # a Sample field

    @property
    def lower_is_better(self) -> bool:
        return self.metric.endswith("_ms")


COLUMNS = (
    Column(f"V2 JSON c={LOW_CONCURRENCY} p50", ("v2-json", "naive-json"), LOW_CONCURRENCY, "p50_ms"),
    Column(f"V2 JSON c={HIGH_CONCURRENCY} req/s (p99)", ("v2-json", "naive-json"), HIGH_CONCURRENCY,
           "requests_per_s"),
    Column(f"V2 binary c={HIGH_CONCURRENCY} req/s (p99)", ("v2-binary",), HIGH_CONCURRENCY, "requests_per_s"),
    Column(f"{BATCH_REQUEST_IMAGES} images in one request, images/s", BATCH_REQUESTS, None, "images_per_s"),
)


def cell_point(results: Results, server: str, column: Column) -> Point | None:
    """The point behind one cell of the table: the first of the column's requests that was measured."""
    for request in column.requests:
        points = [point for point in results.points if (point.server, point.workload) == (server, request)]
        if column.concurrency is not None:
            points = [point for point in points if point.concurrency == column.concurrency]
        if points:
            return max(points, key=lambda point: point.median.images_per_s)
    return None


def _value(point: Point, column: Column) -> float:
    return getattr(point.median, column.metric)


def answered(point: Point | None) -> bool:
    """Whether any response came back within the point (a slow server's may all come after it)."""
    return point is not None and point.median.requests_per_s > 0


def best_anchor(results: Results, column: Column) -> Point | None:
    """The anchors' best point for the column, among those that answered: lowest p50, or most requests
    (images) per second."""
    points = [point for anchor in ANCHORS if answered(point := cell_point(results, anchor, column))]
    if not points:
        return None
    pick = min if column.lower_is_better else max
    return pick(points, key=lambda point: _value(point, column))


def times_best(point: Point, best: Point | None, column: Column) -> float | None:
    """How many times the best anchor's figure this one is; above 1 is better, for latency too."""
    if best is None:
        return None
    value, reference = _value(point, column), _value(best, column)
    if not value or not reference:
        return None
    return reference / value if column.lower_is_better else value / reference


def _cell_text(results: Results, point: Point | None, column: Column, best: Point | None) -> str:
    if point is None:
        return ""
    if not answered(point):
        return f"no answer within the point (c={point.concurrency})"
    ratio = times_best(point, best, column)
    suffix = "" if ratio is None else f", {ratio:.2f}×"
    if column.metric == "p50_ms":
        return f"{point.median.p50_ms:.2f} ms{suffix}"
    if column.metric == "requests_per_s":
        return f"{point.median.requests_per_s:,.0f} ({point.median.p99_ms:,.0f} ms){suffix}"
    share = "" if point.vs_limit is None else f", {point.vs_limit:.0%} of in-process"
    form = " JSON" if point.workload.startswith("v2-json") else ""
    return f"{point.median.images_per_s:,.0f}{form} (c={point.concurrency}{share}){suffix}"


def _row_title(results: Results, server: str) -> str:
    point = next(point for point in results.points if point.server == server)
    if server == NAIVE:
        return f"{point.server_title} (its /predict JSON)"
    return f"**{point.server_title}**" if server == SERVICE else point.server_title


def anchor_table(results: Results) -> list[str]:
    measured = {point.server for point in results.points}
    rows = [server for server in (NAIVE, *ANCHORS, SERVICE) if server in measured]
    bests = [best_anchor(results, column) for column in COLUMNS]
    lines = ["| server | " + " | ".join(column.title for column in COLUMNS) + " |",
             "|---|" + "---:|" * len(COLUMNS)]
    for server in rows:
        cells = [_cell_text(results, cell_point(results, server, column), column, best)
                 for column, best in zip(COLUMNS, bests)]
        lines.append(f"| {_row_title(results, server)} | " + " | ".join(cells) + " |")
    return lines


def _throughput_targets(results: Results, request: str) -> list[Target]:
    column = Column("", (request,), HIGH_CONCURRENCY, "requests_per_s")
    rate_title = f"{request} at concurrency {HIGH_CONCURRENCY}: req/s ≥ {THROUGHPUT_FACTOR:g}× the best anchor's"
    p99_title = f"{request} at concurrency {HIGH_CONCURRENCY}: p99 ≤ that anchor's"
    point, best = cell_point(results, SERVICE, column), best_anchor(results, column)
    if point is None or best is None:
        return [Target(rate_title, "not measured", f"{THROUGHPUT_FACTOR:g}×", None),
                Target(p99_title, "not measured", "the best anchor's", None)]
    ratio = point.median.requests_per_s / best.median.requests_per_s
    return [
        Target(rate_title, f"{ratio:.2f}× ({point.median.requests_per_s:,.0f} req/s; {best.server_title}: "
               f"{best.median.requests_per_s:,.0f})", f"{THROUGHPUT_FACTOR:g}×", ratio >= THROUGHPUT_FACTOR),
        Target(p99_title, f"{point.median.p99_ms:.1f} ms", f"≤ {best.median.p99_ms:.1f} ms ({best.server_title})",
               answered(point) and point.median.p99_ms <= best.median.p99_ms),
    ]


def _batch_target(results: Results) -> Target:
    column = COLUMNS[3]
    title = f"{BATCH_REQUESTS[0]}: images/s ≥ {BATCH_SHARE:.0%} of in-process (best concurrency)"
    point, best = cell_point(results, SERVICE, column), best_anchor(results, column)
    if point is None or point.vs_limit is None:
        return Target(title, "not measured", f"≥ {BATCH_SHARE:.0%}", None)
    anchor = "" if best is None or best.vs_limit is None else \
        f"; best anchor {best.server_title}: {best.vs_limit:.0%}"
    return Target(title, f"{point.vs_limit:.0%} ({point.median.images_per_s:,.0f} images/s at c={point.concurrency}"
                  f"{anchor})", f"≥ {BATCH_SHARE:.0%}", point.vs_limit >= BATCH_SHARE)


def _latency_target(results: Results, request: str) -> Target:
    column = Column("", (request,), LOW_CONCURRENCY, "p50_ms")
    title = f"{request} at concurrency {LOW_CONCURRENCY}: p50 ≤ the best anchor's"
    point, best = cell_point(results, SERVICE, column), best_anchor(results, column)
    if point is None or best is None:
        return Target(title, "not measured", "the best anchor's", None)
    if not answered(point):
        return Target(title, "no answer within the point", f"≤ {best.median.p50_ms:.2f} ms ({best.server_title})",
                      False)
    return Target(title, f"{point.median.p50_ms:.2f} ms", f"≤ {best.median.p50_ms:.2f} ms ({best.server_title})",
                  point.median.p50_ms <= best.median.p50_ms)


def evaluate_anchor_targets(results: Results) -> list[Target]:
    """Issue 18's targets for the service with batching on; empty when no anchor was measured."""
    if not any(point.server in ANCHORS for point in results.points):
        return []
    return [*_throughput_targets(results, "v2-json"), *_throughput_targets(results, "v2-binary"),
            _batch_target(results), _latency_target(results, "v2-json"), _latency_target(results, "v2-binary")]


def render_anchor_section(results: Results) -> list[str]:
    """Markdown lines: the skipped anchors, then the table and the targets when any anchor was measured."""
    skipped = [f"- {reason}" for reason in dict(results.settings.get("skipped", {})).values()]
    if not any(point.server in ANCHORS for point in results.points):
        return ["Anchors:", "", *skipped, ""] if skipped else []
    return [
        "Anchors, the same model file under the same load in the same run (each from its own environment, "
        "settings in docs/benchmark.md):",
        "",
        *([*skipped, ""] if skipped else []),
        *anchor_table(results),
        "",
        "Each figure is followed by how many times the best anchor's it is (above 1 is better; for p50 the best "
        "anchor's p50 over this one's). 256 images: the best concurrency; JSON where the server has no binary "
        "tensors.",
        "",
        "| target (service, batching on, against the best anchor) | measured | required | met |",
        "|---|---|---|---|",
        *(f"| {target.title} | {target.measured} | {target.required} | {met_text(target.met)} |"
          for target in results.anchor_targets),
        "",
    ]
