"""create_app(settings): the app factory. The lifespan loads the registry and drains it on shutdown."""

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
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from service import __version__
from service.api import admin, health, v1, v2
from service.api.common import JSONBody
from service.config import Settings
from service.dataplane import DataPlane
from service.errors import ServiceError
from service.metrics import Metrics
from service.middleware import ServiceMiddleware
from service.registry import ModelRegistry

log = logging.getLogger(__name__)

DESCRIPTION = """
Handwritten-digit CNNs served with ONNX Runtime: predictions, probabilities, **per-layer activations**,
layer weights and occlusion maps over a JSON API (`/v1`), and the **Open Inference Protocol** (`/v2`,
KServe V2 with Triton's binary tensor extension). Every error is `{"error": "..."}`.
"""


def _error_body(message: str, status: int, headers: dict[str, str] | None = None) -> JSONBody:
    return JSONBody({"error": message}, status_code=status, headers=headers)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for error in exc.errors()[:3]:
        where = ".".join(str(item) for item in error.get("loc", ()))
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def service_error(_: Request, exc: ServiceError) -> Response:
        return _error_body(exc.message, exc.status_code, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> Response:
        return _error_body(_validation_message(exc), 422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> Response:
        return _error_body(str(exc.detail), exc.status_code, getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> Response:
        log.exception("unhandled error", exc_info=exc)
        return _error_body("internal server error", 500)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    metrics = Metrics()
    registry = ModelRegistry(settings, metrics)
    dataplane = DataPlane(registry, settings)

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
        finished = await registry.close(settings.shutdown_grace_s)
        log.info("shutdown: %s", "every queued request answered" if finished else "grace period ran out")

    app = FastAPI(title="mnist-serve", version=__version__, description=DESCRIPTION, lifespan=lifespan)
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.registry = registry
    app.state.dataplane = dataplane
    install_error_handlers(app)
    app.router.routes.extend(v1.FAST_ROUTES + v2.FAST_ROUTES)
    for router in (health.router, v1.router, v2.router, admin.router):
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=health.STATIC_DIR), name="static")
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "POST"],
                           allow_headers=["Content-Type", "Authorization", "X-Request-ID", "Inference-Header-Content-Length"],
                           expose_headers=["X-Request-ID", "Inference-Header-Content-Length", "Retry-After"])
    app.add_middleware(ServiceMiddleware, settings=settings, metrics=metrics, known_models=registry.model_names)
    return app


async def _reload_on_sighup(registry: ModelRegistry) -> None:
    log.info("SIGHUP: reloading models from disk")
    outcome = await registry.reload_all()
    for name, result in outcome.items():
        (log.info if result == "ok" else log.error)("reload %s: %s", name, result)
