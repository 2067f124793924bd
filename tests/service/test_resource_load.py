"""Memory, the event loop and a short mixed soak, through a real server with all four committed
models and the default settings: the costliest requests the defaults admit must leave the peak
RSS under the documented bound (docs/limits.md: 700 MB), give the memory back once idle, and leave
/healthz answering. This machine's CPU is shared, so the latency bound here has a wide margin;
docs/limits.md has the measured numbers."""

from __future__ import annotations

import os
import random
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.conftest import ServerProcess, start_server
from tests.service import soak_requests
from tests.service.health_probe import HealthProbe
from tests.soak import run_soak

PEAK_RSS_BOUND_MB = 700  # docs/limits.md
# What stays after load: glibc and Python keep some fragmented pages (0-120 MB over runs here);
# it does not grow from one round of load to the next (docs/limits.md).
RETURNED_MARGIN_MB = 128
# The goal is 50 ms (docs/limits.md has what was measured); CI machines are shared and the probe
# competes for the same cores, so the test only asserts what separates working from stalled
# (before this, /healthz took 1-6 s while such requests ran).
HEALTHZ_P99_BOUND_MS = 500
IDLE_RELEASE_S = 1.0
MEMORY_WAIT_S = 30.0


@pytest.fixture(scope="module")
def four_models(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """Every committed model and version (four models, seven versions), default settings."""
    server = start_server(tmp_path_factory.mktemp("four-models"), {"MNIST_SERVE_LOG_FORMAT": "json"},
                          ready_timeout=180)
    yield server
    assert server.stop() == 0


def status_kb(pid: int, field: str) -> int:
    line = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith(field))
    return int(line.split()[1])


def run_costliest(url: str, rounds: int) -> list[str]:
    """The costliest requests the defaults admit, four at a time, on every model."""
    actions = [action for action in soak_requests.WORST] * rounds
    with httpx.Client(base_url=url, timeout=180) as client, ThreadPoolExecutor(4) as pool:
        return list(pool.map(lambda action: action.run(client, url, random.Random(0)), actions))


def test_peak_memory_stays_under_the_bound_and_comes_back(four_models: ServerProcess) -> None:
    pid = four_models.process.pid
    started_mb = status_kb(pid, "VmRSS") / 1024
    run_costliest(four_models.url, rounds=1)  # the first uses start threads and load image plugins: once
    time.sleep(IDLE_RELEASE_S + 3)
    baseline_mb = status_kb(pid, "VmRSS") / 1024
    statuses = run_costliest(four_models.url, rounds=2)
    for model in soak_requests.MODELS:
        response = httpx.post(f"{four_models.url}/v1/models/{model}/explain?patch=1&stride=1",
                              json={"image": soak_requests.DIGITS[0].tolist()}, timeout=120)
        statuses.append(str(response.status_code))
    assert set(statuses) == {"200"}, statuses
    peak_mb = status_kb(pid, "VmHWM") / 1024
    idle_since = time.monotonic()  # nicer threads give memory back: on a busy machine, later
    while (after_mb := status_kb(pid, "VmRSS") / 1024) >= baseline_mb + RETURNED_MARGIN_MB:
        if time.monotonic() - idle_since > MEMORY_WAIT_S:
            break
        time.sleep(0.5)
    print(f"RSS at start {started_mb:.0f} MB, warm {baseline_mb:.0f} MB, peak {peak_mb:.0f} MB, "
          f"after {after_mb:.0f} MB")
    assert peak_mb < PEAK_RSS_BOUND_MB
    assert after_mb < baseline_mb + RETURNED_MARGIN_MB


def test_healthz_answers_while_the_costliest_requests_run(four_models: ServerProcess) -> None:
    with HealthProbe(four_models.url) as probe:
        statuses = run_costliest(four_models.url, rounds=2)
    summary = probe.summary()
    print(summary)
    assert set(statuses) == {"200"}, statuses
    assert summary["healthz_failures"] == 0 and summary["healthz_requests"] > 20
    assert summary["healthz_p99_ms"] < HEALTHZ_P99_BOUND_MS, summary


def test_a_short_mixed_soak(four_models: ServerProcess) -> None:
    summary = run_soak(four_models, duration=20, settle=IDLE_RELEASE_S + 3)
    print({key: value for key, value in summary.items() if key != "by_action"})
    assert summary["5xx"] == 0, summary["statuses"]
    assert not summary["failed"], summary
    assert summary["fds"]["after"] <= summary["fds"]["baseline"] + 4
    assert summary["rss_mb"]["peak"] < PEAK_RSS_BOUND_MB
    assert os.path.exists(f"/proc/{four_models.process.pid}")
