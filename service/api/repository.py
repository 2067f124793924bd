"""Triton's model repository extension over HTTP: index, load (hot reload) and unload. Off unless
enabled or a token is configured; with a token, every call needs `Authorization: Bearer <token>`."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Request
from starlette.responses import Response

from service.api.bodies import settings_of
from service.api.responses import JSONBody
from service.api.routing import FastRoute, route
from service.repository import ModelRepository, authorize

TAGS = ["admin"]
ERRORS = (401, 404)
ModelName = Annotated[str, Path(description="model name")]


def repository_of(request: Request) -> ModelRepository:
    authorize(settings_of(request), request.headers.get("authorization"))
    return request.app.state.repository


async def index(request: Request) -> Response:
    return JSONBody(repository_of(request).index())


async def load(request: Request, name: ModelName) -> Response:
    return JSONBody(await repository_of(request).load(name))


async def unload(request: Request, name: ModelName) -> Response:
    return JSONBody(await repository_of(request).unload(name))


def routes() -> list[FastRoute]:
    return [
        route("/v2/repository/index", index, methods=["POST"], summary="Models on disk and their state", tags=TAGS,
              errors=ERRORS),
        route("/v2/repository/models/{name}/load", load, methods=["POST"], tags=TAGS, errors=(400, *ERRORS),
              summary="Load or reload a model from disk, without downtime"),
        route("/v2/repository/models/{name}/unload", unload, methods=["POST"], tags=TAGS, errors=ERRORS,
              summary="Stop serving a model (in-flight requests finish)"),
    ]
