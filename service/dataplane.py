"""Protocol-free inference: find the model, check the request's outputs, run through the batcher."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from service.batching import BatchResult
from service.config import Settings
from service.errors import BadRequest, ModelNotReady, NotFound
from service.registry import ModelRegistry, ModelVersion


class DataPlane:
    def __init__(self, registry: ModelRegistry, settings: Settings) -> None:
        self.registry = registry
        self.settings = settings

    @property
    def ready(self) -> bool:
        return self.registry.ready

    def model(self, name: str | None = None, version: int | str | None = None) -> ModelVersion:
        if not self.registry.loaded:
            raise ModelNotReady("models are still loading", retry_after=2)
        name = name or self.settings.default_model
        if isinstance(version, str):
            if not (version.isascii() and version.isdigit() and 0 < len(version) <= 9):
                raise NotFound(f"model {name!r} has no version {version!r}")
            version = int(version)
        return self.registry.get(name, version)

    async def infer(self, model: ModelVersion, batch: np.ndarray, outputs: Sequence[str]) -> BatchResult:
        unknown = [name for name in outputs if name not in model.outputs]
        if unknown:
            raise BadRequest(f"unknown output {unknown[0]!r}; outputs: {', '.join(model.outputs)}")
        if model.batcher.closed and not self.registry.draining:
            model = self._current(model)
        return await model.batcher.submit(batch, outputs)

    def _current(self, retired: ModelVersion) -> ModelVersion:
        """A route resolves its model before it reads the body; if that version was reloaded in
        the meantime, the request runs on the version's new session instead of failing."""
        try:
            return self.registry.get(retired.name, retired.version)
        except NotFound:
            raise ModelNotReady(f"model {retired.label} was unloaded while this request was being read; "
                                "retry", retry_after=1) from None


def predictions(probabilities: np.ndarray, top_k: int) -> list[dict[str, Any]]:
    """One prediction per row: label, confidence, the ten probabilities and the top k."""
    order = np.argsort(-probabilities, axis=1, kind="stable")[:, :top_k]
    result = []
    for row, ranked in zip(probabilities, order.tolist()):
        label = ranked[0]
        result.append({
            "label": label,
            "confidence": row[label],
            "probabilities": row,
            "top_k": [{"label": digit, "probability": row[digit]} for digit in ranked],
        })
    return result
