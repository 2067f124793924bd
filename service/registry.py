"""models/<name>/<version>/model.onnx -> loaded, contract-checked, warmed model versions.

Loading (and reloading) builds the new session, checks it and warms it before it replaces
anything; requests that already hold the old version finish on it, then its batcher drains.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from service.batching import BatchingConfig, DynamicBatcher
from service.config import Settings
from service.errors import ModelLoadError, NotFound, ProviderError
from service.metrics import Metrics
from service.runtime import ModelRuntime
from contract import store
from contract.metadata import ModelMetadata
from contract.spec import INPUT_SHAPE, PROBABILITIES, ContractError, LayerSpec
from contract.validation import ValidatedModel, layer_weights, validate_model

log = logging.getLogger(__name__)



@dataclass
class ModelVersion:
    name: str
    version: int
    path: Path
    file_sha256: str
    file_stamp: tuple[int, int]
    validated: ValidatedModel
    runtime: ModelRuntime
    weights: dict[str, dict[str, np.ndarray]]
    batcher: DynamicBatcher
    loaded_at: float = field(default_factory=time.time)

    @property
    def metadata(self) -> ModelMetadata:
        return self.validated.metadata

    @property
    def layers(self) -> tuple[LayerSpec, ...]:
        return self.validated.layers

    @property
    def outputs(self) -> tuple[str, ...]:
        return self.validated.outputs

    @property
    def label(self) -> str:
        return f"{self.name}:{self.version}"

    def layer(self, name: str) -> LayerSpec:
        for spec in self.layers:
            if spec.name == name:
                return spec
        raise NotFound(f"model {self.name} has no layer {name!r}; layers: {', '.join(s.name for s in self.layers)}")


def file_stamp(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_mtime_ns, stat.st_size


def build_version(name: str, version: int, path: Path, settings: Settings, metrics: Metrics) -> ModelVersion:
    """Load, validate against the contract and warm up one model version. Blocking: run it in a thread."""
    stamp = file_stamp(path)
    raw = path.read_bytes()
    try:
        model = onnx.load_from_string(raw)
        validated = validate_model(model)
    except ContractError as exc:
        raise ModelLoadError(f"{name}/{version}: breaks the model contract: {exc}") from exc
    except Exception as exc:  # a corrupt or foreign file: say so, keep serving the others
        raise ModelLoadError(f"{name}/{version}: not a readable ONNX model: {exc}") from exc
    try:
        runtime = ModelRuntime(raw, settings.device, settings.intra_op_threads, settings.ort_spinning)
    except ProviderError:
        raise
    except Exception as exc:
        raise ModelLoadError(f"{name}/{version}: ONNX Runtime refused it: {exc}") from exc
    warm_up(runtime, validated.outputs, settings.max_batch_size)
    label = f"{name}:{version}"
    batcher = DynamicBatcher(runtime.run, BatchingConfig.from_settings(settings), name=label,
                             observer=metrics.observer(label), release_memory=runtime.release_memory)
    return ModelVersion(
        name=name, version=version, path=path, file_sha256=hashlib.sha256(raw).hexdigest(), file_stamp=stamp,
        validated=validated, runtime=runtime, weights=layer_weights(model, validated.metadata), batcher=batcher,
    )


def warm_up(runtime: ModelRuntime, outputs: tuple[str, ...], max_batch_size: int) -> None:
    """First runs allocate and pick kernels; do them before the version is reported ready, then give
    their memory back (a version that is never asked holds no batch's worth of arena)."""
    runtime.run(np.zeros((1, *INPUT_SHAPE), np.float32), outputs)
    for images in (1, max_batch_size):  # the predictions-only session, at both ends
        runtime.run(np.zeros((images, *INPUT_SHAPE), np.float32), [PROBABILITIES])
    runtime.release_memory()


class ModelRegistry:
    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self._models: dict[str, dict[int, ModelVersion]] = {}
        self.failures: dict[str, str] = {}
        self.loaded = False
        self.draining = False
        self._draining_since: float | None = None
        self._lock = asyncio.Lock()
        self._retired: set[asyncio.Task] = set()

    # ---- discovery -------------------------------------------------------------------------
    def scan(self, only: str | None = None) -> dict[str, dict[int, Path]]:
        if self.settings.model_name:
            return store.scan_single(self.settings.models_dir, self.settings.model_name, only)
        return store.scan(self.settings.models_dir, only)

    # ---- lookup ----------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        return self.loaded and not self.draining and bool(self._models)

    def names(self) -> list[str]:
        return sorted(self._models)

    def model_names(self) -> Collection[str]:
        """The served names, without copying (a view: cheap enough for every request)."""
        return self._models.keys()

    def versions(self, name: str) -> list[int]:
        return sorted(self._models.get(name, {}))

    def get(self, name: str, version: int | None = None) -> ModelVersion:
        versions = self._models.get(name)
        if not versions:
            known = ", ".join(self.names()) or "none"
            raise NotFound(f"model {name!r} is not served (served models: {known})")
        if version is None:
            return versions[max(versions)]
        if version not in versions:
            raise NotFound(f"model {name!r} has no version {version} (versions: {', '.join(map(str, sorted(versions)))})")
        return versions[version]

    def latest(self) -> list[ModelVersion]:
        return [self.get(name) for name in self.names()]

    def all_versions(self) -> list[ModelVersion]:
        return [mv for name in self.names() for _, mv in sorted(self._models[name].items())]

    # ---- loading ---------------------------------------------------------------------------
    async def load_all(self) -> None:
        async with self._lock:
            for name in self.scan():
                await self._load_locked(name, raise_errors=False)
            self.loaded = True
        log.info("models ready: %s", ", ".join(f"{mv.label} on {mv.runtime.provider}" for mv in self.all_versions()) or "none")

    async def load(self, name: str) -> list[ModelVersion]:
        """(Re)load one model from disk: new and changed versions are built, checked and warmed,
        then swapped in; versions gone from disk are unloaded. Raises ModelLoadError and keeps the
        old versions when a new file is broken."""
        if not store.is_model_name(name):
            raise NotFound(f"{name!r} is not a valid model name")
        async with self._lock:
            return await self._load_locked(name, raise_errors=True)

    async def reload_all(self) -> dict[str, str]:
        """Reload every model on disk (SIGHUP). Returns name -> 'ok' or the reason it was refused."""
        outcome: dict[str, str] = {}
        async with self._lock:
            on_disk = self.scan()
            for name in {key.rpartition("/")[0] for key in self.failures} - set(on_disk):
                self._forget_failures(name, {})
            for name in sorted(set(on_disk) | set(self._models)):
                try:
                    await self._load_locked(name, raise_errors=True)
                    outcome[name] = "ok"
                except (ModelLoadError, NotFound) as exc:
                    outcome[name] = str(exc)
        return outcome

    async def _load_locked(self, name: str, raise_errors: bool) -> list[ModelVersion]:
        on_disk = self.scan(only=name).get(name, {})
        current = dict(self._models.get(name, {}))
        self._forget_failures(name, on_disk)
        if not on_disk and not current:
            raise NotFound(f"no {name}/<version>/{store.MODEL_FILE} under {self.settings.models_dir}")
        updated = dict(current)
        errors: list[str] = []
        for version, path in sorted(on_disk.items()):
            old = current.get(version)
            if old is not None and old.file_stamp == file_stamp(path):
                continue
            try:
                new = await asyncio.to_thread(build_version, name, version, path, self.settings, self.metrics)
            except ModelLoadError as exc:
                self.failures[f"{name}/{version}"] = str(exc)
                self.metrics.model_load_failures.labels(name).inc()
                log.error("model refused: %s", exc)
                errors.append(str(exc))
                continue
            if old is not None and old.file_sha256 == new.file_sha256:
                old.file_stamp = new.file_stamp
                await new.batcher.drain(0)
                continue
            self.failures.pop(f"{name}/{version}", None)
            updated[version] = new
            log.info("model loaded: %s/%d (%s %s, test accuracy %.4f) on %s", name, version,
                     new.metadata.framework, new.metadata.architecture, new.metadata.test_accuracy, new.runtime.provider)
        for version in set(current) - set(on_disk):
            del updated[version]
        if updated:
            self._models[name] = updated
        else:
            self._models.pop(name, None)
        for version, old in current.items():
            if updated.get(version) is not old:
                self._retire(old)
        self._refresh_info()
        if errors and raise_errors:
            raise ModelLoadError("; ".join(errors))
        return [updated[v] for v in sorted(updated)]

    def _forget_failures(self, name: str, on_disk: dict[int, Path]) -> None:
        """A refused version whose file is gone has nothing left to report."""
        for key in [key for key in self.failures if key.rpartition("/")[0] == name]:
            if store.parse_version(key.rpartition("/")[2]) not in on_disk:
                del self.failures[key]

    async def unload(self, name: str) -> None:
        async with self._lock:
            versions = self._models.pop(name, None)
            if versions is None:
                raise NotFound(f"model {name!r} is not loaded")
            for old in versions.values():
                self._retire(old)
            self._refresh_info()

    def _retire(self, old: ModelVersion) -> None:
        """Let requests already queued on a replaced version finish, then free it."""
        task = asyncio.get_running_loop().create_task(old.batcher.drain(self.settings.shutdown_grace_s))
        self._retired.add(task)
        task.add_done_callback(self._retired.discard)
        log.info("model retired: %s", old.label)

    def _refresh_info(self) -> None:
        self.metrics.model_info.clear()
        for mv in self.all_versions():
            self.metrics.model_info.labels(mv.name, str(mv.version), mv.runtime.provider, mv.metadata.framework,
                                           mv.metadata.architecture).set(1)

    def begin_draining(self) -> bool:
        """Not ready from now on (a shutdown signal arrived); True the first time."""
        first = not self.draining
        self.draining = True
        if self._draining_since is None:
            self._draining_since = time.monotonic()
        return first

    def grace_left(self, grace_s: float) -> float:
        """What is left of a shutdown grace period that started when draining began: one
        deadline for the server's stop and the batchers' drain together, not one each."""
        if self._draining_since is None:
            return grace_s
        return max(0.0, grace_s - (time.monotonic() - self._draining_since))

    async def close(self, timeout: float) -> bool:
        """Finish everything queued and running, within `timeout` seconds in all."""
        self.begin_draining()
        batchers = [mv.batcher for mv in self.all_versions()]
        results = await asyncio.gather(*(b.drain(timeout) for b in batchers), *self._retired, return_exceptions=True)
        return all(result is True or result is None for result in results)

    def status(self) -> dict[str, Any]:
        return {
            "ready": self.ready,
            "models": {mv.label: mv.runtime.provider for mv in self.all_versions()},
            "refused": dict(self.failures),
        }
