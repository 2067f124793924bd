"""Liveness, readiness, metrics and the web page."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, Response

from service.api.common import JSONBody, dataplane_of, error_responses
from service.errors import ServiceUnavailable

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
router = APIRouter()


@router.get("/healthz", tags=["health"], summary="Liveness")
async def healthz() -> JSONBody:
    return JSONBody({"status": "live"})


@router.get("/readyz", tags=["health"], summary="Readiness: every model loaded and warmed",
            responses=error_responses(503))
async def readyz(request: Request) -> JSONBody:
    plane = dataplane_of(request)
    status = plane.registry.status()
    if not plane.ready:
        reason = "shutting down" if plane.registry.draining else "models not loaded"
        raise ServiceUnavailable(f"not ready: {reason}", retry_after=2)
    providers = sorted(set(status["models"].values()))
    return JSONBody({"status": "ready", "device": plane.settings.device, "providers": providers, **status})


@router.get("/metrics", tags=["health"], summary="Prometheus metrics")
async def metrics(request: Request) -> Response:
    registry = request.app.state.metrics
    return Response(registry.render(), media_type=registry.content_type)


@router.get("/", include_in_schema=False)
async def page() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html")
