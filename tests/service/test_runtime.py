"""Execution provider choice. No GPU here: the decision logic is tested with the provider lists a
CUDA build reports and with a session that fell back to the CPU; the CPU path runs for real."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from service.config import Settings, available_cpus
from service.errors import ProviderError
from service.runtime import CPU, CUDA, PREDICTIONS, ModelRuntime, active_provider, predictions_only, requested_providers
from tests.conftest import MODELS_DIR

GPU_BUILD = [CUDA, CPU]
CPU_BUILD = [CPU]


def test_cpu_device_asks_for_the_cpu_only() -> None:
    assert requested_providers("cpu", GPU_BUILD) == [CPU]


def driver(loads: bool):
    return lambda: loads


def test_auto_takes_cuda_when_the_build_and_the_driver_have_it_else_cpu() -> None:
    assert requested_providers("auto", GPU_BUILD, driver(True)) == [CUDA, CPU]
    assert requested_providers("auto", GPU_BUILD, driver(False)) == [CPU]
    assert requested_providers("auto", CPU_BUILD, driver(True)) == [CPU]


def test_cuda_without_the_nvidia_driver_refuses_before_onnx_runtime_tries() -> None:
    """A GPU build on a host (or a container) without the driver: one clear reason, and none of
    ONNX Runtime's own error lines on stderr."""
    with pytest.raises(ProviderError, match="libcuda.so.1 cannot be loaded"):
        requested_providers("cuda", GPU_BUILD, driver(False))
    assert requested_providers("cuda", GPU_BUILD, driver(True)) == [CUDA, CPU]


def test_cuda_without_a_cuda_build_refuses() -> None:
    with pytest.raises(ProviderError, match="onnxruntime-gpu"):
        requested_providers("cuda", CPU_BUILD)


def test_cuda_session_that_fell_back_to_cpu_refuses() -> None:
    # ONNX Runtime lists CUDA as available, then builds a CPU-only session when CUDA fails to load
    with pytest.raises(ProviderError, match="did not load"):
        active_provider("cuda", [CPU])
    assert active_provider("cuda", [CUDA, CPU]) == CUDA


def test_auto_session_that_fell_back_logs_and_uses_cpu(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="service.runtime"):
        assert active_provider("auto", [CPU]) == CPU
    assert "CPUExecutionProvider" in caplog.text


def test_unknown_device_is_refused() -> None:
    with pytest.raises(ProviderError):
        requested_providers("tpu", GPU_BUILD)


def test_real_cpu_session_reports_its_provider_and_runs_only_requested_outputs() -> None:
    model_bytes = (MODELS_DIR / "cnn-pytorch" / "1" / "model.onnx").read_bytes()
    runtime = ModelRuntime(model_bytes, "cpu", 1)
    assert runtime.provider == CPU
    outputs = runtime.run(np.zeros((2, 1, 28, 28), np.float32), ["probabilities", "conv1"])
    assert set(outputs) == {"probabilities", "conv1"}
    assert outputs["conv1"].shape == (2, 32, 28, 28)
    assert np.allclose(outputs["probabilities"].sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("model", ["cnn-pytorch/2", "lenet-tensorflow/2", "cnn-tensorflow-int8/1"])
def test_predictions_are_computed_by_a_graph_without_the_layers_and_agree_with_the_full_one(model: str) -> None:
    """Requests that want only predictions run a session whose graph outputs nothing else (the
    layers as outputs stop ONNX Runtime's fusions); requests that want a layer run the full graph.
    Both give the same numbers."""
    model_bytes = (MODELS_DIR / model / "model.onnx").read_bytes()
    runtime = ModelRuntime(model_bytes, "cpu", 1)
    assert runtime.predictions_session is not None
    assert {out.name for out in runtime.predictions_session.get_outputs()} == PREDICTIONS
    assert len(runtime.session.get_outputs()) > len(PREDICTIONS)
    assert runtime._session_for(["probabilities"]) is runtime.predictions_session
    assert runtime._session_for(["logits", "probabilities"]) is runtime.predictions_session
    assert runtime._session_for(["probabilities", "conv1"]) is runtime.session
    batch = np.random.default_rng(0).random((8, 1, 28, 28), dtype=np.float32)
    pruned = runtime.run(batch, ["logits", "probabilities"])
    full = dict(zip(["logits", "probabilities"], runtime.session.run(["logits", "probabilities"], {"image": batch})))
    for name in PREDICTIONS:
        np.testing.assert_allclose(pruned[name], full[name], rtol=1e-5, atol=1e-6)
    runtime.release_memory()


def test_a_graph_with_only_predictions_is_not_pruned_again() -> None:
    model_bytes = (MODELS_DIR / "cnn-pytorch" / "1" / "model.onnx").read_bytes()
    pruned = predictions_only(model_bytes)
    assert pruned is not None and predictions_only(pruned) is None


def test_real_cuda_request_on_this_cpu_build_refuses_to_start() -> None:
    model_bytes = (MODELS_DIR / "cnn-pytorch" / "1" / "model.onnx").read_bytes()
    with pytest.raises(ProviderError):
        ModelRuntime(model_bytes, "cuda", 1)


def test_thread_default_follows_the_cpus_this_process_may_use() -> None:
    assert Settings().intra_op_threads == available_cpus() >= 1
    assert Settings(threads=3).intra_op_threads == 3
