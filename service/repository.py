"""The model repository (Triton's extension): index, load (hot reload) and unload, and who may
call them. Apart from the data plane, as MLServer keeps ModelRepositoryHandlers apart."""

from __future__ import annotations

import hmac
import ipaddress
from typing import Any

from service.config import Settings
from service.errors import BadRequest, ModelLoadError, NotFound, Unauthorized
from service.registry import ModelRegistry


def authorize(settings: Settings, bearer: str | None) -> None:
    """Admin calls need the API enabled and, when a token is set, that token. `bearer` is the
    credential the caller presented (HTTP Authorization header or gRPC metadata), if any."""
    if not settings.admin_allowed:
        raise NotFound("the model repository API is disabled (set MNIST_SERVE_ADMIN_TOKEN or MNIST_SERVE_ADMIN_ENABLED)")
    if settings.admin_token:
        scheme, _, token = (bearer or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), settings.admin_token.encode()):
            raise Unauthorized("admin token missing or wrong: send Authorization: Bearer <token>")


def is_loopback(host: str) -> bool:
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def exposure(settings: Settings) -> str | None:
    """Why the admin settings cannot be honoured safely, or None: without a token, the API may only
    listen on a loopback address (anyone who reaches the port could unload every model)."""
    if settings.admin_enabled and not settings.admin_token and not is_loopback(settings.host):
        return (f"admin_enabled without admin_token on host {settings.host}, which is not a loopback address: "
                "anyone who can reach the port could unload the models; set admin_token, or bind to 127.0.0.1")
    return None


class ModelRepository:
    def __init__(self, registry: ModelRegistry) -> None:
        self.registry = registry

    def index(self) -> list[dict[str, Any]]:
        """Every model version on disk or loaded, with its state (READY, UNAVAILABLE, UNLOADED)."""
        entries: list[dict[str, Any]] = []
        on_disk = self.registry.scan()
        for name in sorted(set(on_disk) | set(self.registry.names())):
            loaded = set(self.registry.versions(name))
            for version in sorted(set(on_disk.get(name, {})) | loaded):
                reason = self.registry.failures.get(f"{name}/{version}", "")
                state = "READY" if version in loaded else ("UNAVAILABLE" if reason else "UNLOADED")
                entries.append({"name": name, "version": str(version), "state": state, "reason": reason})
        return entries

    async def load(self, name: str) -> dict[str, Any]:
        try:
            versions = await self.registry.load(name)
        except ModelLoadError as exc:
            raise BadRequest(f"failed to load {name}: {exc}; the previous versions keep serving") from exc
        return {"name": name, "versions": [mv.version for mv in versions],
                "sha256": {str(mv.version): mv.file_sha256 for mv in versions}}

    async def unload(self, name: str) -> dict[str, Any]:
        await self.registry.unload(name)
        return {"name": name, "state": "UNLOADED"}
