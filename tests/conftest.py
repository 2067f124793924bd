"""Shared fixtures: MNIST location, committed models, and real servers on loopback ports."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import numpy as np
import pytest

from contract import store

if TYPE_CHECKING:
    from playwright.sync_api import Browser

REPO_ROOT = Path(__file__).resolve().parent.parent
MODELS_DIR = REPO_ROOT / "models"
SHARED_MNIST = REPO_ROOT.parent / "shared" / "mnist"


def served_models() -> list[str]:
    """The committed models, as the server lists them."""
    return sorted(store.scan(MODELS_DIR))


def latest_version(name: str) -> int:
    """The version a request without one gets: the highest committed."""
    return max(store.scan(MODELS_DIR, only=name)[name])


def model_file(name: str, version: int | None = None) -> Path:
    return store.model_path(MODELS_DIR, name, version or latest_version(name))


def mnist_dir() -> Path:
    if os.environ.get("MNIST_DIR"):
        return Path(os.environ["MNIST_DIR"])
    if SHARED_MNIST.exists():
        return SHARED_MNIST
    return REPO_ROOT / "data" / "mnist"


@pytest.fixture(scope="session")
def mnist_test_set() -> tuple[np.ndarray, np.ndarray]:
    from training.data import load_split

    split = load_split("test", mnist_dir())
    return split.images, split.labels


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class ServerProcess:
    url: str
    process: subprocess.Popen
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def wait_ready(self, path: str = "/readyz", timeout: float = 90.0) -> "ServerProcess":
        """Poll `path` until it answers 200; fail with the server's log if it exits or times out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.process.args} exited with {self.process.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.url + path, timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"{self.process.args} not ready within {timeout}s:\n{self.log()}")


def start_server(tmp_dir: Path, env_overrides: dict[str, str] | None = None, ready_timeout: float = 90.0,
                 wait_ready: bool = True) -> ServerProcess:
    """`mnist-serve serve` in a subprocess on a free loopback port; waits until /readyz answers 200."""
    port = free_port()
    env = {**os.environ, "MNIST_SERVE_HOST": "127.0.0.1", "MNIST_SERVE_PORT": str(port),
           "MNIST_SERVE_GRPC_PORT": str(free_port()),  # servers run side by side: never the default 8001
           "MNIST_SERVE_MODELS_DIR": str(MODELS_DIR), "MNIST_SERVE_DEVICE": "cpu", "PYTHONUNBUFFERED": "1"}
    env.update(env_overrides or {})
    tmp_dir.mkdir(parents=True, exist_ok=True)
    log_path = tmp_dir / f"server-{port}.log"
    process = subprocess.Popen([sys.executable, "-m", "service.cli", "serve"], env=env, cwd=REPO_ROOT,
                               stdout=log_path.open("wb"), stderr=subprocess.STDOUT)
    server = ServerProcess(url=f"http://127.0.0.1:{port}", process=process, log_path=log_path, env=env)
    return server.wait_ready("/readyz", ready_timeout) if wait_ready else server


@pytest.fixture(scope="session")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL of a real server on the committed models, shared by the whole session."""
    server = start_server(tmp_path_factory.mktemp("live-server"))
    yield server.url
    server.stop()


BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                "--no-first-run", "--disable-sync"]


@pytest.fixture(scope="module")
def browser() -> Iterator["Browser"]:
    """Debian's Chromium, headless, driven by Playwright (its own browser download is not used).
    Per module: sync Playwright keeps an event loop running on this thread while it is open, and
    asyncio.run() in later tests would fail beside it."""
    from playwright.sync_api import sync_playwright

    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    with sync_playwright() as driver:
        launched = driver.chromium.launch(executable_path=executable, headless=True, args=BROWSER_ARGS)
        yield launched
        launched.close()


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    path = REPO_ROOT / "test-artifacts"
    path.mkdir(exist_ok=True)
    return path
