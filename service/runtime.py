"""A model's ONNX Runtime sessions: provider choice, threads, and runs that ask only for the outputs needed.

Every layer of a contract model is a graph output, so that clients can see it. Graph outputs stop
ONNX Runtime's fusions (Conv+Relu) and make it reorder every layer back from its blocked layout, so
a second session, over the same graph with only the predictions as outputs, answers the requests
that want nothing else (most of them): docs/benchmark.md measures the difference."""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Callable, Sequence

import numpy as np
import onnx
import onnxruntime as ort

from contract.spec import INPUT_NAME, INPUT_SHAPE, LOGITS, PROBABILITIES
from service.errors import ProviderError
from service.priority import lower_current_thread

log = logging.getLogger(__name__)

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
DRIVER_LIBRARY = "libcuda.so.1"
PREDICTIONS = frozenset((LOGITS, PROBABILITIES))


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


def predictions_only(model_bytes: bytes) -> bytes | None:
    """The same graph with only its predictions as outputs; None when it has no other output."""
    model = onnx.load_from_string(model_bytes)
    kept = [output for output in model.graph.output if output.name in PREDICTIONS]
    if len(kept) == len(model.graph.output) or not kept:
        return None
    del model.graph.output[:]
    model.graph.output.extend(kept)
    return model.SerializeToString()


class ModelRuntime:
    """Inference sessions over a model's bytes. Thread-safe: `run` may be called concurrently."""

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
        lower_current_thread()  # the sessions' thread pools are started by this thread and inherit its niceness
        self.session = ort.InferenceSession(model_bytes, options, providers=providers)
        self.provider = active_provider(device, self.session.get_providers())
        self.output_names = [out.name for out in self.session.get_outputs()]
        pruned = predictions_only(model_bytes)
        self.predictions_session = ort.InferenceSession(pruned, options, providers=providers) if pruned else None
        if self.predictions_session is not None:
            active_provider(device, self.predictions_session.get_providers())
        # The arena keeps the largest batch's memory for the next run (fast under load); a run with
        # shrinkage frees every arena region no run is using, which is how an idle session gives it back.
        self._shrink = ort.RunOptions()
        arenas = "cpu:0;gpu:0" if self.provider == CUDA else "cpu:0"
        self._shrink.add_run_config_entry("memory.enable_memory_arena_shrinkage", arenas)
        self._probe = np.zeros((1, *INPUT_SHAPE), np.float32)

    def _session_for(self, names: Sequence[str]) -> ort.InferenceSession:
        if self.predictions_session is not None and PREDICTIONS.issuperset(names):
            return self.predictions_session
        return self.session

    def run(self, batch: np.ndarray, outputs: Sequence[str]) -> dict[str, np.ndarray]:
        names = list(outputs)
        return dict(zip(names, self._session_for(names).run(names, {INPUT_NAME: batch})))

    def release_memory(self) -> None:
        """Give the arenas' unused memory back to the system (a one-image run with shrinkage)."""
        for session in filter(None, (self.session, self.predictions_session)):
            session.run([PROBABILITIES], {INPUT_NAME: self._probe}, self._shrink)
