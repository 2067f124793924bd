"""A mixed soak against a real server: valid, hostile and disconnecting clients at once, while a
separate process times /healthz and the server's resident memory and open files are sampled.

    python -m tests.soak                  # 5 minutes, all four models, default settings
    python -m tests.soak --duration 30    # a short run
    python -m tests.soak --worst          # /healthz while each of the costliest admitted requests runs

It starts its own server (`mnist-serve serve` on a free loopback port, the repository's models) so
that it can read the server's /proc entries, and prints a summary (and writes it as JSON with
--report). It exits 1 when any answer was a 5xx, a valid request failed, the log has a traceback
or a line that is not one JSON object, or the memory did not come back after the load.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from tempfile import mkdtemp
from typing import Any

import httpx
import numpy as np

from tests.conftest import ServerProcess, start_server
from tests.service.health_probe import HealthProbe
from tests.service.soak_requests import DISCONNECTING, HOSTILE, VALID, WORST, Action, Outcome

SAMPLE_INTERVAL_S = 0.5
MEMORY_WAIT_S = 30.0


@dataclass
class Resources:
    pid: int
    rss: list[int] = field(default_factory=list)
    fds: list[int] = field(default_factory=list)

    def sample(self) -> None:
        status = Path(f"/proc/{self.pid}/status").read_text()
        self.rss.append(int(next(line for line in status.splitlines() if line.startswith("VmRSS")).split()[1]) * 1024)
        self.fds.append(len(os.listdir(f"/proc/{self.pid}/fd")))


class Load:
    """Threads that each run random actions from one list until stopped, tallying outcomes."""

    def __init__(self, url: str, seed: int) -> None:
        self.url = url
        self.seed = seed
        self.outcomes: Counter[tuple[str, str, str]] = Counter()  # (group, action, status)
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []

    def run(self, group: str, actions: list[Action], clients: int) -> None:
        for index in range(clients):
            thread = threading.Thread(target=self._loop, args=(group, actions, index), daemon=True,
                                      name=f"{group}-{index}")
            thread.start()
            self.threads.append(thread)

    def _loop(self, group: str, actions: list[Action], index: int) -> None:
        chooser = random.Random(f"{self.seed}-{group}-{index}")
        weights = [action.weight for action in actions]
        with httpx.Client(base_url=self.url, timeout=120) as client:
            while not self.stop.is_set():
                action = chooser.choices(actions, weights)[0]
                try:
                    outcome: Outcome = action.run(client, self.url, chooser)
                except (httpx.HTTPError, OSError) as exc:  # a failure to report, not a reason to stop
                    outcome = type(exc).__name__
                with self.lock:
                    self.outcomes[(group, action.name, str(outcome))] += 1

    def join(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=180)


def start(args: argparse.Namespace) -> ServerProcess:
    env = {"MNIST_SERVE_LOG_FORMAT": "json", "MNIST_SERVE_ACCESS_LOG": "false"}
    env.update(dict(item.split("=", 1) for item in args.env))
    return start_server(Path(mkdtemp(prefix="soak-")), env, ready_timeout=180)


def measure(server: ServerProcess, seconds: float, during: Callable[[], None], resources: Resources) -> dict[str, Any]:
    """Run `during` (it starts load), probe /healthz and sample resources for `seconds`."""
    with HealthProbe(server.url) as probe:
        during()
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            resources.sample()
            time.sleep(SAMPLE_INTERVAL_S)
    return probe.summary()


def log_problems(server: ServerProcess) -> dict[str, int]:
    lines = server.log().splitlines()
    not_json = 0
    for line in lines:
        try:
            json.loads(line)
        except ValueError:
            not_json += 1
    return {"log_lines": len(lines), "log_lines_not_one_json_object": not_json,
            "log_tracebacks": sum("Traceback" in line for line in lines)}


def warm_up(url: str, settle: float) -> None:
    """Each valid request once, then idle: the first uses start threads and load what is loaded
    once (image plugins, kernels), so the baseline the memory must come back to is the warm one."""
    chooser = random.Random(0)
    with httpx.Client(base_url=url, timeout=180) as client:
        for action in VALID + WORST:
            action.run(client, url, chooser)
    time.sleep(settle)


def run_soak(server: ServerProcess, duration: float, valid: int = 4, hostile: int = 6, disconnecting: int = 2,
             settle: float = 5.0, seed: int = 13) -> dict[str, Any]:
    """The mixed soak against a running server; the summary, with `failed` saying whether any
    answer was a 5xx, a valid request failed, /healthz failed, or the memory did not come back."""
    resources = Resources(server.process.pid)
    warm_up(server.url, settle)
    resources.sample()
    baseline_rss, baseline_fds = resources.rss[-1], resources.fds[-1]
    load = Load(server.url, seed)

    def begin() -> None:
        load.run("valid", VALID, valid)
        load.run("hostile", HOSTILE, hostile)
        load.run("disconnecting", DISCONNECTING, disconnecting)

    health = measure(server, duration, begin, resources)
    load.join()
    peak_rss, peak_fds = max(resources.rss), max(resources.fds)
    # Memory is given back by threads that run nicer than the rest: on a busy machine they may
    # take a while to be scheduled, so wait for it (up to a limit) rather than a fixed time.
    near_baseline = baseline_rss * 1.25 + 32 * 2**20
    idle_since = time.monotonic()
    time.sleep(settle)
    resources.sample()
    while resources.rss[-1] > near_baseline and time.monotonic() - idle_since < settle + MEMORY_WAIT_S:
        time.sleep(SAMPLE_INTERVAL_S)
        resources.sample()
    statuses = Counter(status for (_, _, status) in load.outcomes.elements())
    server_errors = sum(count for status, count in statuses.items() if status.isdigit() and int(status) >= 500)
    valid_failures = sum(count for (group, _, status), count in load.outcomes.items()
                         if group == "valid" and status != "200")
    after_rss = resources.rss[-1]
    memory_back = after_rss <= near_baseline
    summary = {
        "duration_s": duration, "clients": {"valid": valid, "hostile": hostile, "disconnecting": disconnecting},
        "requests": sum(statuses.values()), "statuses": dict(sorted(statuses.items())),
        "5xx": server_errors, "valid_not_200": valid_failures, **health,
        "rss_mb": {"baseline": mb(baseline_rss), "peak": mb(peak_rss), "after": mb(after_rss),
                   "after_s": round(time.monotonic() - idle_since, 1)},
        "memory_came_back": memory_back,
        "fds": {"baseline": baseline_fds, "peak": peak_fds, "after": resources.fds[-1]},
        "by_action": {f"{group}/{name}": {status: count for (g, n, status), count in sorted(load.outcomes.items())
                                          if (g, n) == (group, name)}
                      for group, name in sorted({(g, n) for (g, n, _) in load.outcomes})},
        **log_problems(server),
    }
    summary["failed"] = bool(server_errors or valid_failures or summary["log_tracebacks"] or not memory_back
                             or summary["log_lines_not_one_json_object"] or summary["healthz_failures"])
    return summary


def soak(args: argparse.Namespace) -> int:
    server = start(args)
    try:
        summary = run_soak(server, args.duration, args.valid_clients, args.hostile_clients, args.disconnecting_clients,
                           args.settle, args.seed)
    finally:
        stopped = server.stop()
    summary["exit_status"] = stopped
    report(summary, args.report)
    return 1 if summary["failed"] or stopped != 0 else 0


def worst(args: argparse.Namespace) -> int:
    """/healthz while each of the costliest admitted requests runs back to back (two clients)."""
    server = start(args)
    resources = Resources(server.process.pid)
    results: dict[str, Any] = {}
    try:
        resources.sample()
        results["baseline_rss_mb"] = mb(resources.rss[-1])
        for action in [None, *WORST]:
            load = Load(server.url, args.seed)
            def begin(chosen: Action | None = action, worst_load: Load = load) -> None:
                if chosen is not None:
                    worst_load.run("worst", [chosen], 2)

            outcome = measure(server, args.per_request, begin, resources)
            load.join()
            outcome["statuses"] = {status: count for (_, _, status), count in load.outcomes.items()}
            outcome["peak_rss_mb"] = mb(max(resources.rss))
            results[action.name if action else "idle"] = outcome
            print(f"{action.name if action else 'idle':>28}: healthz p50 {outcome['healthz_p50_ms']} ms, "
                  f"p99 {outcome['healthz_p99_ms']} ms, max {outcome['healthz_max_ms']} ms; {outcome['statuses']}",
                  flush=True)
        time.sleep(args.settle)
        resources.sample()
        results["after_rss_mb"] = mb(resources.rss[-1])
        results["peak_rss_mb"] = mb(max(resources.rss))
    finally:
        results["exit_status"] = server.stop()
    report(results, args.report)
    return 0


def mb(value: int) -> float:
    return round(value / 2**20, 1)


def report(summary: dict[str, Any], path: str | None) -> None:
    text = json.dumps(summary, indent=2)
    print(text)
    if path:
        Path(path).write_text(text + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.soak", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=300.0, help="seconds of load (default 300)")
    parser.add_argument("--valid-clients", type=int, default=4)
    parser.add_argument("--hostile-clients", type=int, default=6)
    parser.add_argument("--disconnecting-clients", type=int, default=2)
    parser.add_argument("--settle", type=float, default=5.0, help="idle seconds before the last memory sample")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--env", action="append", default=[], help="a server setting, NAME=value (repeatable)")
    parser.add_argument("--report", help="also write the summary here as JSON")
    parser.add_argument("--worst", action="store_true", help="time /healthz under each costliest request instead")
    parser.add_argument("--per-request", type=float, default=15.0, help="--worst: seconds per request kind")
    args = parser.parse_args(argv)
    np.random.seed(args.seed)
    return worst(args) if args.worst else soak(args)


if __name__ == "__main__":
    sys.exit(main())
