"""Each route declared once: a FastAPI route whose handler validates the query through one pydantic
model per operation and calls the endpoint directly, without FastAPI's per-request dependency
solving; the OpenAPI document comes from the same declaration (the endpoint's signature)."""

from __future__ import annotations

import functools
import inspect
import types
import typing
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Request
from fastapi.params import Query as QueryParam
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from starlette.responses import Response

from service.errors import Unprocessable

Endpoint = Callable[..., Awaitable[Response]]
MODEL_PATH_PARAMETERS = ("name", "version")


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the error statuses a route can answer."""
    schema = {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]}
    return {code: {"description": "error", "content": {"application/json": {"schema": schema}}} for code in codes}


def query_model(endpoint: Endpoint) -> tuple[str, type[BaseModel]] | None:
    """The endpoint's `Annotated[SomeOptions, Query()]` parameter, if it has one."""
    for name, hint in typing.get_type_hints(endpoint, include_extras=True).items():
        if typing.get_origin(hint) is typing.Annotated:
            model, *extras = typing.get_args(hint)
            if any(isinstance(extra, QueryParam) for extra in extras) and issubclass(model, BaseModel):
                return name, model
    return None


def validation_message(error: ValidationError, prefix: str = "query") -> str:
    parts = []
    for item in error.errors()[:3]:
        where = ".".join(str(part) for part in (prefix, *item.get("loc", ())))
        parts.append(f"{where}: {item.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


class FastRoute(APIRoute):
    """The handler: query options validated once (422 naming the option), path parameters as
    strings, then one call of the endpoint."""

    def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
        endpoint = self.endpoint
        options = query_model(endpoint)

        async def handler(request: Request) -> Response:
            kwargs: dict[str, Any] = dict(request.path_params)
            if options is not None:
                name, model = options
                try:
                    kwargs[name] = model.model_validate(dict(request.query_params))
                except ValidationError as exc:
                    raise Unprocessable(validation_message(exc)) from None
            return await endpoint(request, **kwargs)

        return handler


def _for_path(endpoint: Endpoint, path: str) -> Endpoint:
    """The endpoint with a signature that has only the model path parameters `path` holds, so the
    OpenAPI document does not show the others as query parameters."""
    signature = inspect.signature(endpoint)
    hints = typing.get_type_hints(endpoint, include_extras=True)
    kept = []
    for name, parameter in signature.parameters.items():
        if name in MODEL_PATH_PARAMETERS:
            if f"{{{name}}}" not in path:
                continue
            parameter = parameter.replace(default=inspect.Parameter.empty, annotation=_required(hints[name]))
        if parameter.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD and kept:
            parameter = parameter.replace(kind=inspect.Parameter.KEYWORD_ONLY)
        kept.append(parameter)

    @functools.wraps(endpoint)
    async def variant(*args: Any, **kwargs: Any) -> Response:
        return await endpoint(*args, **kwargs)

    variant.__signature__ = signature.replace(parameters=kept)  # type: ignore[attr-defined]
    return variant


def _required(hint: Any) -> Any:
    """`Annotated[str | None, Path(...)]` -> `Annotated[str, Path(...)]`: a path parameter is always there."""
    if typing.get_origin(hint) is typing.Annotated:
        base, *extras = typing.get_args(hint)
        return typing.Annotated[(_required(base), *extras)] if extras else _required(base)
    arguments = [argument for argument in typing.get_args(hint) if argument is not type(None)]
    return arguments[0] if typing.get_origin(hint) in (typing.Union, types.UnionType) and len(arguments) == 1 else hint


def route(path: str, endpoint: Endpoint, *, methods: list[str], summary: str, tags: list[str],
          errors: tuple[int, ...] = (), operation_id: str | None = None, **options: Any) -> FastRoute:
    return FastRoute(path, _for_path(endpoint, path), methods=methods, summary=summary, tags=tags,
                     responses=error_responses(*errors), operation_id=operation_id or endpoint.__name__, **options)


def model_routes(prefix: str, action: str, endpoint: Endpoint, *, methods: list[str], summary: str, tags: list[str],
                 errors: tuple[int, ...] = (), default_model: bool = False, **options: Any) -> list[FastRoute]:
    """The path variants of one operation on a model: `{prefix}/models/{name}{action}`, the same
    with `/versions/{version}`, and (`default_model`) `{prefix}{action}` on the default model."""
    operation = endpoint.__name__
    variants = [(f"{prefix}{action}", f"{summary} (default model)", f"{operation}_default")] if default_model else []
    variants += [(f"{prefix}/models/{{name}}{action}", summary, operation),
                 (f"{prefix}/models/{{name}}/versions/{{version}}{action}", f"{summary} (a given version)",
                  f"{operation}_version")]
    return [route(path, endpoint, methods=methods, summary=text, tags=tags, errors=errors, operation_id=operation_id,
                  **options) for path, text, operation_id in variants]
