"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import Request
from starlette.responses import Response

from service.api.responses import JSONBody
from service.api.routing import FastRoute, route
from service.dataplane import DataPlane
from service.errors import ServiceUnavailable

TAGS = ["health"]


async def healthz(request: Request) -> Response:
    return JSONBody({"status": "live"})


async def readyz(request: Request) -> Response:
    plane: DataPlane = request.app.state.dataplane
    if not plane.ready:
        raise ServiceUnavailable(f"not ready: {plane.not_ready_reason()}", retry_after=2)
    return JSONBody({"status": "ready", **plane.status()})


async def metrics(request: Request) -> Response:
    registry = request.app.state.metrics
    return Response(registry.render(), media_type=registry.content_type)


def routes() -> list[FastRoute]:
    return [
        route("/healthz", healthz, methods=["GET"], summary="Liveness", tags=TAGS),
        route("/readyz", readyz, methods=["GET"], summary="Readiness: every model loaded and warmed", tags=TAGS,
              errors=(503,)),
        route("/metrics", metrics, methods=["GET"], summary="Prometheus metrics", tags=TAGS),
    ]
