"""The measured results: samples, points with their runs, targets, and their JSON form."""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field, fields

from bench.load import LoadResult


@dataclass(frozen=True)
class Sample:
    """One run of one point; CPU in cores (CPU seconds per second of load)."""

    requests_per_s: float
    images_per_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    errors: float
    server_cpu: float
    client_cpu: float
    other_cpu: float

    @classmethod
    def from_load(cls, load: LoadResult, images_per_request: int, server_cpu_s: float,
                  machine_busy_s: float) -> "Sample":
        seconds = load.duration_s or 1.0
        other_s = max(0.0, machine_busy_s - server_cpu_s - load.client_cpu_s)
        return cls(requests_per_s=load.requests_per_s, images_per_s=load.requests_per_s * images_per_request,
                   p50_ms=load.latency_ms["p50"], p95_ms=load.latency_ms["p95"], p99_ms=load.latency_ms["p99"],
                   errors=load.errors, server_cpu=server_cpu_s / seconds, client_cpu=load.client_cpu_s / seconds,
                   other_cpu=other_s / seconds)


def median_sample(samples: list[Sample]) -> Sample:
    """Each metric's median over the runs."""
    return Sample(**{item.name: statistics.median(getattr(sample, item.name) for sample in samples)
                     for item in fields(Sample)})


@dataclass
class Point:
    server: str
    server_title: str
    workload: str
    workload_title: str
    concurrency: int
    images_per_request: int
    runs: list[Sample] = field(default_factory=list)
    vs_naive: float | None = None
    vs_limit: float | None = None

    @property
    def median(self) -> Sample:
        return median_sample(self.runs)


@dataclass(frozen=True)
class Target:
    title: str
    measured: str
    required: str
    met: bool | None  # None: a point the target needs was not measured


def met_text(met: bool | None) -> str:
    return {True: "yes", False: "**no**", None: "not measured"}[met]


@dataclass
class Results:
    date: str
    machine: dict[str, object]
    settings: dict[str, object]
    limit_runs: dict[int, list[dict[str, float]]]  # in-process images/s: batch size -> runs -> session config
    points: list[Point]
    targets: list[Target] = field(default_factory=list)  # issue 6's, against the naive server
    anchor_targets: list[Target] = field(default_factory=list)  # issue 18's, against the best anchor

    @property
    def limit_by_config(self) -> dict[int, dict[str, float]]:
        """Each session configuration's median images/s, by batch size."""
        return {batch: {name: statistics.median(run[name] for run in runs) for name in runs[0]}
                for batch, runs in self.limit_runs.items() if runs}

    @property
    def limit(self) -> dict[int, float]:
        """The limit at each batch size: the best configuration's median images/s."""
        return {batch: max(by_config.values()) for batch, by_config in self.limit_by_config.items()}

    def find(self, server: str, workload: str, concurrency: int) -> Point | None:
        return next((point for point in self.points if (point.server, point.workload, point.concurrency)
                     == (server, workload, concurrency)), None)

    def to_json(self) -> dict[str, object]:
        return {
            "date": self.date, "machine": self.machine, "settings": self.settings,
            "limit_images_per_s": {str(batch): value for batch, value in self.limit.items()},
            "limit_by_config": {str(batch): values for batch, values in self.limit_by_config.items()},
            "limit_runs": {str(batch): runs for batch, runs in self.limit_runs.items()},
            "points": [{**{key: value for key, value in asdict(point).items() if key != "runs"},
                        "median": asdict(point.median), "runs": [asdict(run) for run in point.runs]}
                       for point in self.points],
            "targets": [asdict(target) for target in self.targets],
            "anchor_targets": [asdict(target) for target in self.anchor_targets],
        }


def results_from_json(document: dict) -> Results:
    """A saved run back into Results (`Results.to_json`'s inverse), to render it again."""
    points = [Point(**{key: value for key, value in point.items() if key not in ("median", "runs")},
                    runs=[Sample(**run) for run in point["runs"]]) for point in document["points"]]
    return Results(date=document["date"], machine=document["machine"], settings=document["settings"],
                   limit_runs={int(batch): runs for batch, runs in document["limit_runs"].items()}, points=points,
                   targets=[Target(**target) for target in document["targets"]],
                   anchor_targets=[Target(**target) for target in document.get("anchor_targets", [])])
