"""Fixtures shared by the service tests: an HTTP client on the live server, ONNX Runtime as ground truth."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import onnxruntime as ort
import pytest

from tests.conftest import MODELS_DIR


def ort_session(name: str, version: int = 1) -> ort.InferenceSession:
    """ONNX Runtime on the same file the server loads: the ground truth."""
    return ort.InferenceSession(str(MODELS_DIR / name / str(version) / "model.onnx"), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def http(live_server: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live_server, timeout=60) as session:
        yield session


@pytest.fixture(scope="module")
def reference() -> ort.InferenceSession:
    """The reference session for cnn-pytorch, the model the protocol tests use."""
    return ort_session("cnn-pytorch")
