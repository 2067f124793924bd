"""`--workers 2`: two processes behind one port, through a real server. Both serve, the metrics
add up across them, SIGHUP reloads every worker, SIGTERM drains them all, and a start that
cannot be honoured is refused once."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import ServerProcess
from tests.service.servers import MODEL_NAME, SOURCE_MODEL, start_private_server, write_shifted_model

BLANK = {"image": [[0] * 28 for _ in range(28)]}
REQUESTS = 60


def worker_pids(parent: int, expected: int = 2, timeout: float = 120) -> list[int]:
    """The supervisor's worker processes, once `expected` of them serve (they start one after the other)."""
    deadline = time.monotonic() + timeout
    while True:
        children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
        pids = [int(pid) for pid in children if "spawn_main" in Path(f"/proc/{pid}/cmdline").read_text()]
        if len(pids) >= expected or time.monotonic() > deadline:
            return pids
        time.sleep(0.2)


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def requests_counted(metrics: str) -> float:
    return sum(float(value) for value in re.findall(
        r'^mnist_serve_requests_total\{endpoint="/v1/models/\{name\}/predict".*status="200"\} (\S+)$', metrics, re.M))


@pytest.fixture(scope="module")
def workers(tmp_path_factory: pytest.TempPathFactory) -> ServerProcess:
    server = start_private_server(tmp_path_factory.mktemp("workers"), {"MNIST_SERVE_WORKERS": "2"})
    yield server
    server.stop()


def test_both_workers_serve_and_the_metrics_add_up(workers: ServerProcess) -> None:
    pids = worker_pids(workers.process.pid)
    assert len(pids) == 2
    before = {pid: cpu_ticks(pid) for pid in pids}
    for _ in range(REQUESTS):  # a new connection each time: the kernel spreads them over the workers
        response = httpx.post(f"{workers.url}/v1/models/{MODEL_NAME}/predict", json=BLANK, timeout=30)
        assert response.status_code == 200
    assert all(cpu_ticks(pid) > before[pid] for pid in pids), "a worker served nothing"
    assert requests_counted(httpx.get(f"{workers.url}/metrics", timeout=10).text) == REQUESTS


def test_sighup_reloads_every_worker(workers: ServerProcess, tmp_path: Path) -> None:
    models_dir = Path(workers.env["MNIST_SERVE_MODELS_DIR"])
    write_shifted_model(SOURCE_MODEL, models_dir / MODEL_NAME / "2" / "model.onnx")
    os.kill(workers.process.pid, signal.SIGHUP)
    deadline = time.monotonic() + 60
    consecutive = 0
    while consecutive < 20 and time.monotonic() < deadline:
        version = httpx.get(f"{workers.url}/v1/models/{MODEL_NAME}", timeout=10).json()["version"]
        consecutive = consecutive + 1 if version == 2 else 0
    assert consecutive == 20, "a worker still serves version 1 as the latest"


def test_sigterm_drains_every_worker_and_exits_0(tmp_path: Path) -> None:
    server = start_private_server(tmp_path, {"MNIST_SERVE_WORKERS": "2"})
    pids = worker_pids(server.process.pid)
    assert server.stop(signal.SIGTERM) == 0, server.log()
    assert not any(Path(f"/proc/{pid}").exists() for pid in pids)


def test_a_refused_start_is_one_line_whatever_the_workers(tmp_path: Path) -> None:
    result = subprocess.run(["mnist-serve", "serve", "--workers", "3", "--device", "cuda", "--port", "0"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.count("refusing to start") == 1, result.stderr
