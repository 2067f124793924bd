"""Triton's model repository extension over HTTP: index, load (hot reload) and unload. Off unless
enabled or a token is configured; with a token, every call needs `Authorization: Bearer <token>`.

No call may come from a web page's form: a form (urlencoded, multipart, text/plain) is the one
kind of cross-site POST a browser sends without asking the server first, so those content types
are refused (415). Without a token the call must say `Content-Type: application/json`, which a
page can only send cross-site after a CORS preflight the server does not grant; with a token it
may send no body at all (a page cannot send the token)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Request
from starlette.responses import Response

from service.api.bodies import media_type, settings_of
from service.api.responses import JSONBody
from service.api.routing import FastRoute, route
from service.errors import UnsupportedMediaType
from service.repository import ModelRepository, authorize

TAGS = ["admin"]
ERRORS = (401, 404, 415)
ModelName = Annotated[str, Path(description="model name")]


def repository_of(request: Request) -> ModelRepository:
    settings = settings_of(request)
    authorize(settings, request.headers.get("authorization"))
    kind = media_type(request)
    if not (kind == "application/json" or kind.endswith("+json") or (not kind and settings.admin_token)):
        shown = kind or "none"
        raise UnsupportedMediaType(f"Content-Type {shown} is not accepted by the model repository API: send "
                                   "Content-Type: application/json (web forms are refused)")
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
