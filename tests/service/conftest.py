"""Fixtures shared by the service tests: an HTTP client on the live server, ONNX Runtime as ground truth."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import onnxruntime as ort
import pytest
from starlette.testclient import TestClient

from contract import store
from service.config import Settings
from service.main import create_app

from tests.conftest import model_file


def ort_session(name: str, version: int | None = None) -> ort.InferenceSession:
    """ONNX Runtime on the same file the server loads (the latest version unless one is named): the ground truth."""
    return ort.InferenceSession(str(model_file(name, version)), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def http(live_server: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live_server, timeout=60) as session:
        yield session


@pytest.fixture(scope="module")
def reference() -> ort.InferenceSession:
    """The reference session for cnn-pytorch, the model the protocol tests use."""
    return ort_session("cnn-pytorch")


@pytest.fixture(scope="module")
def lenet_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private models directory holding one small model, lenet-pytorch version 1."""
    root = tmp_path_factory.mktemp("models")
    store.write_atomic(store.model_path(root, "lenet-pytorch", 1), model_file("lenet-pytorch", 1).read_bytes())
    return root


def in_process_app(models_dir: Path, **settings: object) -> TestClient:
    """The app itself, in this process (Starlette's TestClient runs its lifespan): for the error
    paths that need a part of the engine replaced, which a server in another process cannot."""
    config = Settings(models_dir=models_dir, default_model="lenet-pytorch", device="cpu", threads=1, max_batch_size=8,
                      **settings)  # type: ignore[arg-type]
    return TestClient(create_app(config), raise_server_exceptions=False)
