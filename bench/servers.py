"""The servers under test, each a real process on a free loopback port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from bench.cpu import process_tree_cpu_seconds, process_tree_pids

REPO_ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"


@dataclass(frozen=True)
class ServerSpec:
    name: str  # key in results: naive, batching-off, batching-on, an anchor's
    title: str
    port: int
    argv: list[str]
    env: dict[str, str]
    ready_path: str
    cwd: Path = REPO_ROOT


@dataclass
class RunningServer:
    """A server process started from a ServerSpec; the benchmark's servers and the tests' are the same kind."""

    spec: ServerSpec
    url: str
    process: subprocess.Popen
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)  # the whole environment it was started with

    @property
    def pid(self) -> int:
        return self.process.pid

    def cpu_seconds(self) -> float:
        return process_tree_cpu_seconds(self.pid)

    def wait_idle(self, max_cores: float = 0.1, interval: float = 0.25, timeout: float = 60.0) -> bool:
        """Wait until the server uses under `max_cores` over an interval: requests a load
        generator abandoned at its deadline are finished and cannot slow the next point."""
        deadline = time.monotonic() + timeout
        before = self.cpu_seconds()
        while time.monotonic() < deadline:
            time.sleep(interval)
            now = self.cpu_seconds()
            if (now - before) / interval < max_cores:
                return True
            before = now
        return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def wait_ready(self, path: str | None = None, timeout: float = 120.0) -> "RunningServer":
        """Poll `path` (the spec's readiness path by default) until it answers 200; stop the server
        and raise with its log if it exits or the time runs out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.spec.title} exited with {self.process.returncode}:\n{self.log_tail()}")
            if _answers(self.url + (path or self.spec.ready_path)):
                return self
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"{self.spec.title} was not ready within {timeout:.0f} s:\n{self.log_tail()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """`sig` (SIGTERM), then SIGKILL after `timeout`; then any descendant still alive (the
        tritonserver that PyTriton starts, MLServer's inference workers) gets SIGKILL too. The exit status."""
        descendants = process_tree_pids(self.pid)[1:]
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for pid in descendants:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return self.process.returncode


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def naive_spec(model_path: Path, port: int) -> ServerSpec:
    return ServerSpec("naive", "naive server", port, [sys.executable, "-m", "bench.naive_server", "--model-path",
                                                str(model_path), "--host", HOST, "--port", str(port)],
                      {}, "/openapi.json")


def service_spec(models_dir: Path, port: int, default_model: str, batching: bool) -> ServerSpec:
    """`mnist-serve serve` on the CPU; batching off means a batch of at most one request."""
    env = {"MNIST_SERVE_HOST": HOST, "MNIST_SERVE_PORT": str(port), "MNIST_SERVE_MODELS_DIR": str(models_dir),
           "MNIST_SERVE_DEVICE": "cpu", "MNIST_SERVE_DEFAULT_MODEL": default_model,
           "MNIST_SERVE_GRPC_PORT": str(free_port())}  # two services side by side: not both on 8001
    if not batching:
        env["MNIST_SERVE_MAX_BATCH_SIZE"] = "1"
    name, title = ("batching-on", "service, batching on") if batching else ("batching-off", "service, batching off")
    return ServerSpec(name, title, port, [sys.executable, "-m", "service.cli", "serve"], env, "/readyz")


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def launch(spec: ServerSpec, log_dir: Path) -> RunningServer:
    """Start the process, its output in `log_dir/<name>.log`; do not wait for it."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{spec.name}.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **spec.env}
    with log_path.open("wb") as log:
        process = subprocess.Popen(spec.argv, env=env, cwd=spec.cwd, stdout=log, stderr=subprocess.STDOUT)
    return RunningServer(spec, f"http://{HOST}:{spec.port}", process, log_path, env)


def start(spec: ServerSpec, log_dir: Path, ready_timeout: float = 120.0) -> RunningServer:
    """Start the process and wait until its readiness path answers 200."""
    return launch(spec, log_dir).wait_ready(timeout=ready_timeout)


def post(url: str, body: bytes, content_type: str, headers: dict[str, str]) -> tuple[int, bytes, dict[str, str]]:
    """One request outside the load generator: status, body and headers."""
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": content_type, **headers})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read(), dict(response.headers.items())
    except urllib.error.HTTPError as error:
        return error.code, error.read(), dict(error.headers.items())
