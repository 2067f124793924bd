"""Shared fixtures: MNIST location, committed models, and real servers on loopback ports."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

from bench.servers import RunningServer as ServerProcess
from bench.servers import ServerSpec, free_port, launch
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


def start_server(tmp_dir: Path, env_overrides: dict[str, str] | None = None, ready_timeout: float = 90.0,
                 wait_ready: bool = True) -> ServerProcess:
    """`mnist-serve serve` in a subprocess on a free loopback port; waits until /readyz answers 200."""
    port = free_port()
    env = {"MNIST_SERVE_HOST": "127.0.0.1", "MNIST_SERVE_PORT": str(port),
           "MNIST_SERVE_GRPC_PORT": str(free_port()),  # servers run side by side: never the default 8001
           "MNIST_SERVE_MODELS_DIR": str(MODELS_DIR), "MNIST_SERVE_DEVICE": "cpu", **(env_overrides or {})}
    spec = ServerSpec(f"server-{port}", "mnist-serve", port, [sys.executable, "-m", "service.cli", "serve"], env,
                      "/readyz")
    server = launch(spec, tmp_dir)
    return server.wait_ready(timeout=ready_timeout) if wait_ready else server


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
