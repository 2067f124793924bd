"""The gRPC server: grpc.aio on the event loop uvicorn runs, in the same process, on grpc_port.
It serves inference.GRPCInferenceService, grpc.health.v1.Health and server reflection; a
message may be at most max_body_bytes, as an HTTP body, and the messages of calls in flight count
against max_pending_body_bytes with the HTTP bodies. On SIGTERM it stops taking calls at
once and lets those in flight finish within shutdown_grace_s, as uvicorn does for HTTP."""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from service.body_budget import BodyBudget
from service.config import Settings
from service.dataplane import DataPlane
from service.grpc.generated import grpc_service_pb2_grpc as pb_grpc
from service.grpc.health import ReadinessHealth
from service.grpc.interceptor import ServiceInterceptor
from service.grpc.servicer import SERVICE_NAME, InferenceServicer
from service.metrics import Metrics
from service.repository import ModelRepository

log = logging.getLogger(__name__)
HEALTH_SERVICE_NAME = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name


class GrpcStartError(RuntimeError):
    """The gRPC port cannot be had; the message is one line for the operator."""


def server_options(settings: Settings, reuse_port: bool) -> list[tuple[str, Any]]:
    return [
        ("grpc.max_receive_message_length", settings.max_body_bytes),
        ("grpc.max_send_message_length", -1),  # answers are bounded by max_images_per_request, as over HTTP
        # Workers of one server share the port; otherwise a port in use is an error, not a second server on it.
        ("grpc.so_reuseport", 1 if reuse_port else 0),
    ]


def address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def port_in_use_error(settings: Settings) -> GrpcStartError:
    return GrpcStartError(f"cannot bind {address(settings.host, settings.grpc_port)} for gRPC (grpc_port): the port "
                          "is in use or the address is not available")


def check_port(settings: Settings) -> None:
    """Refuse early when grpc_port cannot be bound (before workers that share it start)."""
    if not settings.grpc_enabled:
        return
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    with socket.socket(family=family) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((settings.host, settings.grpc_port))
        except OSError:
            raise port_in_use_error(settings) from None


class GrpcFrontEnd:
    def __init__(self, settings: Settings, plane: DataPlane, repository: ModelRepository, metrics: Metrics,
                 bodies: BodyBudget | None = None) -> None:
        self.settings = settings
        self.bodies = bodies if bodies is not None else BodyBudget(settings.max_pending_body_bytes)
        self.plane = plane
        self.repository = repository
        self.metrics = metrics
        self.port: int | None = None
        self._server: grpc.aio.Server | None = None
        self._health: ReadinessHealth | None = None
        self._health_task: asyncio.Task | None = None
        self._stopping: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def for_app(cls, app: Any, settings: Settings) -> GrpcFrontEnd:
        """The front end over the same data plane, repository and metrics as the HTTP app."""
        state = app.state
        return cls(settings, state.dataplane, state.repository, state.metrics, state.body_budget)

    async def start(self, reuse_port: bool = False) -> int | None:
        """Bind grpc_port and start serving on the running loop; the port bound, or None when
        gRPC is off (grpc_enabled false). `reuse_port`: this process is one of several workers."""
        if not self.settings.grpc_enabled:
            return None
        self._loop = asyncio.get_running_loop()
        server = grpc.aio.server(interceptors=[ServiceInterceptor(self.settings, self.metrics, self.bodies)],
                                 options=server_options(self.settings, reuse_port))
        pb_grpc.add_GRPCInferenceServiceServicer_to_server(
            InferenceServicer(self.plane, self.repository, self.settings), server)
        self._health = ReadinessHealth(self.plane, (SERVICE_NAME,))
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection((SERVICE_NAME, HEALTH_SERVICE_NAME, reflection.SERVICE_NAME), server)
        try:
            port = server.add_insecure_port(address(self.settings.host, self.settings.grpc_port))
        except RuntimeError:
            port = 0
        if port == 0:
            raise port_in_use_error(self.settings)
        await server.start()
        self._server, self.port = server, port
        self._health_task = self._loop.create_task(self._health.keep_fresh())
        log.info("serving the Open Inference Protocol over gRPC on %s", address(self.settings.host, port))
        return port

    def drain(self) -> None:
        """Begin the graceful stop; safe to call from a signal handler."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._begin_stop)

    def _begin_stop(self) -> asyncio.Task | None:
        if self._server is None:
            return None
        if self._stopping is None:
            self._stopping = asyncio.get_running_loop().create_task(self._stop(self._server))
        return self._stopping

    async def _stop(self, server: grpc.aio.Server) -> None:
        assert self._health is not None
        if self._health_task is not None:
            self._health_task.cancel()
        await self._health.enter_graceful_shutdown()
        await server.stop(self.settings.shutdown_grace_s)
        log.info("gRPC stopped")

    async def stop(self) -> None:
        """Stop (or wait for the stop that drain() began) within shutdown_grace_s."""
        stopping = self._begin_stop()
        if stopping is not None:
            await stopping
