"""create_app(settings): the app factory. Every route is declared once in the route modules'
`routes()`; the lifespan loads the registry (when the server has not already) and drains it."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from service import __version__
from service.api import health, insight, page, repository, v1, v2
from service.api.responses import error_body
from service.api.routing import validation_message
from service.body_budget import BodyBudget
from service.config import Settings
from service.dataplane import DataPlane
from service.metrics import Metrics
from service.middleware import ServiceMiddleware
from service.registry import ModelRegistry
from service.repository import ModelRepository

log = logging.getLogger(__name__)

DESCRIPTION = """
Handwritten-digit CNNs served with ONNX Runtime: predictions, probabilities, **per-layer activations**,
layer weights and occlusion maps over a JSON API (`/v1`), and the **Open Inference Protocol** (`/v2`,
KServe V2 with Triton's binary tensor extension). Every error is `{"error": "..."}`.
"""
DOCS_ASSETS = "/docs-assets"
CORS_HEADERS = ["Content-Type", "Authorization", "X-Request-ID", "Inference-Header-Content-Length"]
CORS_EXPOSED = ["X-Request-ID", "Inference-Header-Content-Length", "Retry-After"]


def install_error_handlers(app: FastAPI) -> None:
    """Starlette's own errors (unknown path, wrong method) as {"error": ...}; ServiceErrors and
    unexpected errors are answered by the middleware."""

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> Response:
        return error_body(str(exc.detail), exc.status_code, getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> Response:
        return error_body(validation_message(exc, prefix=""), 422)  # type: ignore[arg-type]


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    metrics = Metrics()
    registry = ModelRegistry(settings, metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not registry.loaded:  # the server loads them before it binds its port; an app under test here
            await registry.load_all()
        gc.collect()
        gc.freeze()  # the loaded models and the app are long-lived: keep them out of every later collection
        loop = asyncio.get_running_loop()
        if hasattr(signal, "SIGHUP") and threading.current_thread() is threading.main_thread():
            loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(_reload_on_sighup(registry)))
        else:  # Windows, or an app run off the main thread (tests): reload through the admin API
            log.warning("SIGHUP reload is not available here; use POST /v2/repository/models/{name}/load")
        yield
        finished = await registry.close(registry.grace_left(settings.shutdown_grace_s))
        log.info("shutdown: %s", "every queued request answered" if finished else "grace period ran out")

    # Swagger UI (/docs) from assets shipped in the fastapi-offline wheel, not a CDN. No /redoc: ReDoc's
    # bundle still fetches its logo from a CDN.
    app = FastAPIOffline(title="mnist-serve", version=__version__, description=DESCRIPTION, lifespan=lifespan,
                         static_url=DOCS_ASSETS, redoc_url=None)
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.registry = registry
    app.state.dataplane = DataPlane(registry, settings)
    app.state.repository = ModelRepository(registry)
    app.state.body_budget = BodyBudget(settings.max_pending_body_bytes)  # HTTP bodies and gRPC messages
    install_error_handlers(app)
    for module in (v1, insight, v2, repository, health, page):
        app.router.routes.extend(module.routes())
    page.mount_static(app)
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "POST"],
                           allow_headers=CORS_HEADERS, expose_headers=CORS_EXPOSED)
    app.add_middleware(ServiceMiddleware, settings=settings, metrics=metrics, bodies=app.state.body_budget)
    return app


async def _reload_on_sighup(registry: ModelRegistry) -> None:
    log.info("SIGHUP: reloading models from disk")
    outcome = await registry.reload_all()
    for name, result in outcome.items():
        (log.info if result == "ok" else log.error)("reload %s: %s", name, result)
