"""Triton's model repository extension: index, load (hot reload) and unload. Off unless enabled
or a token is configured; with a token, every call needs `Authorization: Bearer <token>`."""

from __future__ import annotations

import hmac
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request

from service.api.common import JSONBody, dataplane_of, error_responses, settings_of
from service.errors import BadRequest, ModelLoadError, NotFound, Unauthorized


def require_admin(request: Request) -> None:
    settings = settings_of(request)
    if not settings.admin_allowed:
        raise NotFound("the model repository API is disabled (set MNIST_SERVE_ADMIN_TOKEN or MNIST_SERVE_ADMIN_ENABLED)")
    if settings.admin_token:
        supplied = request.headers.get("authorization", "")
        scheme, _, token = supplied.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), settings.admin_token.encode()):
            raise Unauthorized("admin token missing or wrong: send Authorization: Bearer <token>")


router = APIRouter(prefix="/v2/repository", tags=["admin"], dependencies=[Depends(require_admin)],
                   responses=error_responses(401, 404))
ModelName = Annotated[str, Path(description="model name")]


@router.post("/index", summary="Models on disk and their state")
async def index(request: Request) -> JSONBody:
    registry = dataplane_of(request).registry
    entries: list[dict[str, Any]] = []
    on_disk = registry.scan()
    for name in sorted(set(on_disk) | set(registry.names())):
        loaded = set(registry.versions(name))
        for version in sorted(set(on_disk.get(name, {})) | loaded):
            reason = registry.failures.get(f"{name}/{version}", "")
            state = "READY" if version in loaded else ("UNAVAILABLE" if reason else "UNLOADED")
            entries.append({"name": name, "version": str(version), "state": state, "reason": reason})
    return JSONBody(entries)


@router.post("/models/{name}/load", summary="Load or reload a model from disk, without downtime",
             responses=error_responses(400))
async def load(request: Request, name: ModelName) -> JSONBody:
    registry = dataplane_of(request).registry
    try:
        versions = await registry.load(name)
    except ModelLoadError as exc:
        raise BadRequest(f"failed to load {name}: {exc}; the previous versions keep serving") from exc
    return JSONBody({"name": name, "versions": [mv.version for mv in versions],
                     "sha256": {str(mv.version): mv.file_sha256 for mv in versions}})


@router.post("/models/{name}/unload", summary="Stop serving a model (in-flight requests finish)")
async def unload(request: Request, name: ModelName) -> JSONBody:
    await dataplane_of(request).registry.unload(name)
    return JSONBody({"name": name, "state": "UNLOADED"})
