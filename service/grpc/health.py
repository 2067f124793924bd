"""The standard grpc.health.v1.Health service (what Kubernetes' gRPC probes call), read from the
data plane: SERVING when every model is loaded and warmed, NOT_SERVING while loading or draining.
The server as a whole ("") and inference.GRPCInferenceService answer alike."""

from __future__ import annotations

import asyncio

import grpc
from grpc_health.v1 import health_pb2
from grpc_health.v1.health import aio as health_aio

from service.dataplane import DataPlane

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
REFRESH_S = 1.0  # how soon a Watch stream hears of a readiness change it was not told about


class ReadinessHealth(health_aio.HealthServicer):
    def __init__(self, plane: DataPlane, services: tuple[str, ...]) -> None:
        super().__init__()
        self._plane = plane
        self._services = ("", *services)

    async def refresh(self) -> None:
        status = SERVING if self._plane.ready else NOT_SERVING
        for service in self._services:
            if self._server_status.get(service) != status:
                await self.set(service, status)

    async def Check(self, request: health_pb2.HealthCheckRequest,
                    context: grpc.aio.ServicerContext) -> health_pb2.HealthCheckResponse:
        await self.refresh()
        return await super().Check(request, context)

    async def Watch(self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext) -> None:
        await self.refresh()
        await super().Watch(request, context)

    async def keep_fresh(self) -> None:
        """Tell Watch streams of readiness changes (a model unloaded, the last one gone)."""
        while True:
            await self.refresh()
            await asyncio.sleep(REFRESH_S)
