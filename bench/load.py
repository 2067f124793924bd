"""Load from a separate process: wrk with bench/post.lua, or bench/async_client without wrk.

Both run as a child process that POSTs one body file in a closed loop and prints one
JSON summary line; the child's CPU seconds come from getrusage(RUSAGE_CHILDREN).
"""

from __future__ import annotations

import json
import math
import resource
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from bench.payloads import Workload

LUA_SCRIPT = Path(__file__).resolve().parent / "post.lua"
REPO_ROOT = Path(__file__).resolve().parent.parent
WRK_TIMEOUT = "60s"  # a 256-image request queued behind 63 others takes seconds, not wrk's default 2 s
TOOLS = ("wrk", "asyncio")


@dataclass(frozen=True)
class LoadResult:
    tool: str
    duration_s: float
    requests: int  # responses received, whatever their status
    status_errors: int  # responses with status >= 400
    socket_errors: int  # connect, read and write errors and timeouts
    latency_ms: dict[str, float]  # mean, max, p50, p95, p99
    client_cpu_s: float

    @property
    def errors(self) -> int:
        return self.status_errors + self.socket_errors

    @property
    def ok_requests(self) -> int:
        return self.requests - self.status_errors

    @property
    def requests_per_s(self) -> float:
        return self.ok_requests / self.duration_s if self.duration_s else 0.0


def default_tool() -> str:
    """wrk when it is installed, else the asyncio client."""
    return "wrk" if shutil.which("wrk") else "asyncio"


def tool_version(tool: str) -> str:
    if tool == "wrk":
        completed = subprocess.run(["wrk", "-v"], capture_output=True, text=True, timeout=10)
        return (completed.stdout + completed.stderr).splitlines()[0].strip()
    return f"bench.async_client on Python {sys.version.split()[0]}"


def write_body(workload: Workload, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{workload.name}.body"
    path.write_bytes(workload.body)
    return path


def command(tool: str, url: str, body_file: Path, workload: Workload, concurrency: int, duration: float) -> list[str]:
    headers = [item for pair in workload.headers.items() for item in pair]
    if tool == "wrk":
        seconds = max(1, math.ceil(duration))  # wrk takes whole seconds
        return ["wrk", "-t1", f"-c{concurrency}", f"-d{seconds}s", f"--timeout={WRK_TIMEOUT}", "-s", str(LUA_SCRIPT),
                url, "--", str(body_file), workload.content_type, *headers]
    if tool == "asyncio":
        header_args = [arg for pair in workload.headers.items() for arg in ("--header", *pair)]
        return [sys.executable, "-m", "bench.async_client", url, str(body_file), workload.content_type,
                "-c", str(concurrency), "-d", str(duration), *header_args]
    raise ValueError(f"unknown load tool {tool!r}; choose from {', '.join(TOOLS)}")


def _summary_line(output: str) -> dict:
    for line in output.splitlines():
        marker, _, document = line.partition(" ")
        if marker in ("WRK_JSON", "CLIENT_JSON"):
            return json.loads(document)
    raise RuntimeError(f"the load generator printed no summary:\n{output}")


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_load(tool: str, base_url: str, workload: Workload, body_file: Path, concurrency: int,
             duration: float, cpus: str | None = None) -> LoadResult:
    """Drive `workload` at `concurrency` open connections for `duration` seconds (on the CPUs in
    `cpus`, a taskset list, when given)."""
    argv = command(tool, base_url + workload.path, body_file, workload, concurrency, duration)
    if cpus is not None:
        argv = ["taskset", "-c", cpus, *argv]
    cpu_before = _children_cpu_s()
    completed = subprocess.run(argv, capture_output=True, text=True, cwd=REPO_ROOT, timeout=duration + 120)
    client_cpu_s = _children_cpu_s() - cpu_before
    if completed.returncode != 0:
        raise RuntimeError(f"{argv[0]} exited with {completed.returncode}:\n{completed.stdout}{completed.stderr}")
    summary = _summary_line(completed.stdout)
    latency_ms = {key: float(value) / 1000 for key, value in summary["latency_us"].items()}
    socket_errors = sum(int(summary[key]) for key in ("connect_errors", "read_errors", "write_errors", "timeouts"))
    return LoadResult(tool=tool, duration_s=summary["duration_us"] / 1e6, requests=int(summary["requests"]),
                      status_errors=int(summary["status_errors"]), socket_errors=socket_errors,
                      latency_ms=latency_ms, client_cpu_s=client_cpu_s)
