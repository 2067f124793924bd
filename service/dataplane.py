"""The boundary between the protocols and the engine: find a model, describe it, run inference
through its batcher, say whether the server is ready. Knows no protocol; V1, V2 over HTTP and V2
over gRPC all call it, and nothing above it touches the registry, the batchers or the runtimes."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from contract import store
from contract.metadata import ModelMetadata
from contract.spec import WEIGHTED_KINDS, LayerSpec
from service import context, inflight
from service.admission import Admission, Cost, raw_outputs
from service.batching import BatchingConfig, BatchResult
from service.config import Settings
from service.errors import BadRequest, ModelNotReady, NotFound
from service.registry import ModelRegistry, ModelVersion


@dataclass(frozen=True)
class ModelDescription:
    """What every protocol says about a model version."""

    name: str
    version: int
    versions: list[int]
    metadata: ModelMetadata
    provider: str
    layers: tuple[LayerSpec, ...]
    outputs: tuple[str, ...]
    batching: BatchingConfig
    ready: bool


class DataPlane:
    def __init__(self, registry: ModelRegistry, settings: Settings) -> None:
        self.registry = registry
        self.settings = settings
        self.admission = Admission(settings)

    # ---- readiness -------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        return self.registry.ready

    @property
    def draining(self) -> bool:
        return self.registry.draining

    def status(self) -> dict[str, Any]:
        """Readiness with what is loaded and what was refused (GET /readyz)."""
        status = self.registry.status()
        return {"device": self.settings.device, "providers": sorted(set(status["models"].values())), **status}

    def not_ready_reason(self) -> str:
        return "shutting down" if self.registry.draining else "models not loaded"

    # ---- models ----------------------------------------------------------------------------
    def resolve(self, name: str | None = None, version: int | str | None = None) -> ModelVersion:
        """The model version a request names (the default model and its latest version when it
        names none); an unknown name or version is a 404."""
        if not self.registry.loaded:
            raise ModelNotReady("models are still loading", retry_after=2)
        name = name or self.settings.default_model
        if isinstance(version, str):
            parsed = store.parse_version(version)
            if parsed is None:
                context.record_model("unknown")
                raise NotFound(f"model {name!r} has no version {version!r}")
            version = parsed
        try:
            model = self.registry.get(name, version)
        except NotFound:
            context.record_model("unknown")  # client-chosen names must not grow the metrics' label set
            raise
        context.record_model(model.name)
        return model

    def describe(self, model: ModelVersion) -> ModelDescription:
        return ModelDescription(
            name=model.name, version=model.version, versions=self.registry.versions(model.name),
            metadata=model.metadata, provider=model.runtime.provider, layers=model.layers, outputs=model.outputs,
            batching=model.batcher.config, ready=self.ready,
        )

    def describe_latest(self) -> list[ModelDescription]:
        return [self.describe(model) for model in self.registry.latest()]

    def layer_weights(self, model: ModelVersion, layer: str) -> tuple[LayerSpec, dict[str, np.ndarray]]:
        spec = model.layer(layer)
        if spec.kind not in WEIGHTED_KINDS:
            raise NotFound(f"layer {layer!r} is a {spec.kind} layer and has no weights; "
                           f"weighted layers: {', '.join(model.weights)}")
        return spec, model.weights[layer]

    # ---- inference -------------------------------------------------------------------------
    def admit(self, cost: Cost) -> None:
        """413 when one request costs more than the per-request limits allow: call it as soon as
        the cost is known (before the body is read when the query alone says it)."""
        self.admission.check(cost)

    async def infer(self, model: ModelVersion, batch: np.ndarray, outputs: Sequence[str], cost: Cost | None = None,
                    deadline: float | None = None) -> BatchResult:
        """Run `batch` [n, 1, 28, 28] through the model's batcher; the result holds `outputs`.

        `cost` prices the request (service.admission); without one it is charged its outputs as raw
        float32, so an endpoint whose response is bigger (JSON, PNG) must pass its own. Its response
        bytes are held in the server's budget until the request ends. `deadline` (time.monotonic())
        is the caller's own: a request still queued when it passes is dropped (504). A client that
        disconnects while its request waits cancels it, before compute."""
        unknown = [name for name in outputs if name not in model.outputs]
        if unknown:
            raise BadRequest(f"unknown output {unknown[0]!r}; outputs: {', '.join(model.outputs)}")
        if len(set(outputs)) != len(outputs):
            repeated = next(name for name, count in Counter(outputs).items() if count > 1)
            raise BadRequest(f"output {repeated!r} is requested more than once")
        cost = cost or raw_outputs(model.layers, len(batch), outputs)
        self.admission.check(cost)
        if model.batcher.closed and not self.registry.draining:
            model = self._current(model)
        scoped = self.admission.hold_response(cost)
        batcher = model.batcher
        # Listen for the client leaving when the request will wait: behind other work, or in chunks.
        waits = batcher.busy > 0 or batcher.queue_depth > 0 or len(batch) > batcher.config.max_batch_size
        try:
            with inflight.cancellable(watch=waits):
                return await batcher.submit(batch, outputs, deadline)
        finally:
            if not scoped:
                self.admission.give_back(cost)

    def _current(self, retired: ModelVersion) -> ModelVersion:
        """A request resolves its model before it reads the body; if that version was reloaded in
        the meantime, the request runs on the version's new session instead of failing."""
        try:
            return self.registry.get(retired.name, retired.version)
        except NotFound:
            raise ModelNotReady(f"model {retired.label} was unloaded while this request was being read; "
                                "retry", retry_after=1) from None
