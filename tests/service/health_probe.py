"""GET /healthz back to back in a process of its own (its own GIL, so the client's work does not
show as the server's latency): the soak's and the load tests' measure of the event loop."""

from __future__ import annotations

import multiprocessing
import time
from typing import Any

import httpx

INTERVAL_S = 0.02


def probe(url: str, stop: Any, results: Any) -> None:
    """On one kept-alive connection until `stop` is set; puts (latencies in seconds, their start
    times (time.time()), failures)."""
    latencies: list[float] = []
    times: list[float] = []
    failures = 0
    with httpx.Client(base_url=url, timeout=10) as client:
        while not stop.is_set():
            times.append(time.time())
            started = time.perf_counter()
            try:
                ok = client.get("/healthz").status_code == 200
            except httpx.HTTPError:
                ok = False
            latencies.append(time.perf_counter() - started)
            failures += not ok
            time.sleep(INTERVAL_S)
    results.put((latencies, times, failures))


class HealthProbe:
    """with HealthProbe(url) as probe: ...; then probe.latencies, probe.failures."""

    def __init__(self, url: str) -> None:
        context = multiprocessing.get_context("spawn")
        self._stop, self._results = context.Event(), context.Queue()
        self._process = context.Process(target=probe, args=(url, self._stop, self._results), daemon=True)
        self.latencies: list[float] = []
        self.times: list[float] = []
        self.failures = 0

    def __enter__(self) -> "HealthProbe":
        self._process.start()
        time.sleep(1.0)  # the probe's interpreter starts and sends its first requests
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self.latencies, self.times, self.failures = self._results.get(timeout=60)
        self._process.join(timeout=30)

    def percentile(self, share: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else float("nan")

    def summary(self) -> dict[str, float]:
        return {"healthz_requests": len(self.latencies), "healthz_failures": self.failures,
                "healthz_p50_ms": round(self.percentile(0.50) * 1000, 2),
                "healthz_p99_ms": round(self.percentile(0.99) * 1000, 2),
                "healthz_max_ms": round(max(self.latencies, default=float("nan")) * 1000, 2),
                "healthz_slowest": [(time.strftime("%H:%M:%S", time.gmtime(started)) + f"{started % 1:.3f}"[1:],
                                     round(latency * 1000, 1))
                                    for latency, started in sorted(zip(self.latencies, self.times), reverse=True)[:5]]}
