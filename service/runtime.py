"""One ONNX Runtime session: provider choice, threads, and runs that ask only for the outputs needed."""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Callable, Sequence

import numpy as np
import onnxruntime as ort

from service.errors import ProviderError
from service.priority import lower_current_thread
from contract.spec import INPUT_NAME, INPUT_SHAPE, PROBABILITIES

log = logging.getLogger(__name__)

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
DRIVER_LIBRARY = "libcuda.so.1"


def nvidia_driver_loads() -> bool:
    """Whether the NVIDIA driver's CUDA library loads in this process. Asked before ONNX Runtime
    tries: without a driver it prints its own errors to stderr before falling back to the CPU."""
    try:
        ctypes.CDLL(DRIVER_LIBRARY)
    except OSError:
        return False
    return True


def requested_providers(device: str, available: Sequence[str],
                        driver_loads: Callable[[], bool] = nvidia_driver_loads) -> list[str]:
    """The providers to ask a session for. `cuda` without a CUDA-enabled build or without the
    NVIDIA driver fails here; `auto` takes CUDA only when both are there."""
    if device == "cpu":
        return [CPU]
    if device == "cuda":
        if CUDA not in available:
            raise ProviderError(
                f"device 'cuda' requested but this onnxruntime build offers only {list(available)}; "
                "install onnxruntime-gpu (and not onnxruntime) on a host with CUDA"
            )
        if not driver_loads():
            raise ProviderError(
                f"device 'cuda' requested but the NVIDIA driver's {DRIVER_LIBRARY} cannot be loaded: no GPU here "
                "(in a container: --gpus all or compose's GPU reservation, and the NVIDIA Container Toolkit)"
            )
        return [CUDA, CPU]
    if device == "auto":
        return [CUDA, CPU] if CUDA in available and driver_loads() else [CPU]
    raise ProviderError(f"unknown device {device!r}: use auto, cuda or cpu")


def active_provider(device: str, session_providers: Sequence[str]) -> str:
    """The provider a session really got. ONNX Runtime falls back to the CPU silently when CUDA
    fails to load (missing libraries, no GPU); with device `cuda` that is an error."""
    active = session_providers[0] if session_providers else CPU
    if device == "cuda" and active != CUDA:
        raise ProviderError(
            f"device 'cuda' requested but the session runs on {list(session_providers)}: "
            "CUDA or cuDNN did not load (check the driver, CUDA 13 and cuDNN libraries)"
        )
    if device == "auto" and active != CUDA:
        log.info("device auto: using %s", active)
    return active


class ModelRuntime:
    """An inference session over a model's bytes. Thread-safe: `run` may be called concurrently."""

    def __init__(self, model_bytes: bytes, device: str, intra_op_threads: int, spinning: bool = False) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        # Spinning worker threads answer faster but take the event loop's core while they wait for work.
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        providers = requested_providers(device, ort.get_available_providers())
        lower_current_thread()  # the session's thread pool is started by this thread and inherits its niceness
        self.session = ort.InferenceSession(model_bytes, options, providers=providers)
        self.provider = active_provider(device, self.session.get_providers())
        self.output_names = [out.name for out in self.session.get_outputs()]
        # The arena keeps the largest batch's memory for the next run (fast under load); a run with
        # shrinkage frees every arena region no run is using, which is how an idle session gives it back.
        self._shrink = ort.RunOptions()
        arenas = "cpu:0;gpu:0" if self.provider == CUDA else "cpu:0"
        self._shrink.add_run_config_entry("memory.enable_memory_arena_shrinkage", arenas)
        self._probe = np.zeros((1, *INPUT_SHAPE), np.float32)

    def run(self, batch: np.ndarray, outputs: Sequence[str]) -> dict[str, np.ndarray]:
        names = list(outputs)
        return dict(zip(names, self.session.run(names, {INPUT_NAME: batch})))

    def release_memory(self) -> None:
        """Give the arena's unused memory back to the system (a one-image run with shrinkage)."""
        self.session.run([PROBABILITIES], {INPUT_NAME: self._probe}, self._shrink)
