"""What every unary gRPC call needs, as service.middleware does it for HTTP: a request id (metadata
`x-request-id` if valid, else generated; sent back as trailing metadata), the request context, the
message's bytes held against max_pending_body_bytes with the HTTP bodies until the call ends,
every ServiceError answered as its gRPC status with the HTTP message (anything else a logged
INTERNAL naming the request id), metrics with protocol="grpc", and the access log."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from service import context
from service.body_budget import BodyBudget
from service.config import Settings
from service.errors import ServiceError
from service.grpc.status import code_of, trailing_metadata
from service.metrics import Metrics
from service.middleware import REQUEST_ID

log = logging.getLogger("mnist_serve.access")
PROTOCOL = "grpc"
REQUEST_ID_KEY = "x-request-id"

Behaviour = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]


def request_id_of(metadata: Any) -> str:
    for item in metadata or ():
        if item.key == REQUEST_ID_KEY and isinstance(item.value, str) and REQUEST_ID.match(item.value):
            return item.value
    return uuid.uuid4().hex


class ServiceInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, settings: Settings, metrics: Metrics, bodies: BodyBudget) -> None:
        self.settings = settings
        self.metrics = metrics
        self.bodies = bodies
        self._handlers: dict[str, grpc.RpcMethodHandler] = {}
        self._children: dict[tuple[str, str, str], tuple[Any, Any]] = {}

    async def intercept_service(self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
                                details: grpc.HandlerCallDetails) -> Any:
        method: str = details.method  # type: ignore[attr-defined]
        cached = self._handlers.get(method)
        if cached is not None:
            return cached
        handler = await continuation(details)
        if handler is None or handler.unary_unary is None:  # unknown method, or a stream (health Watch, reflection)
            return handler
        wrapped = grpc.unary_unary_rpc_method_handler(self._wrap(method, handler.unary_unary),
                                                      request_deserializer=handler.request_deserializer,
                                                      response_serializer=handler.response_serializer)
        self._handlers[method] = wrapped
        return wrapped

    def _wrap(self, method: str, behaviour: Behaviour) -> Behaviour:
        async def answer(request: Any, servicer_context: grpc.aio.ServicerContext) -> Any:
            started = time.perf_counter()
            request_id = request_id_of(servicer_context.invocation_metadata())
            state, token = context.begin(request_id, PROTOCOL)
            echo = ((REQUEST_ID_KEY, request_id),)
            code = grpc.StatusCode.OK
            held = 0
            self.metrics.in_flight.inc()
            try:
                servicer_context.set_trailing_metadata(echo)
                size = request.ByteSize()
                self.bodies.hold(size)
                held = size
                return await behaviour(request, servicer_context)
            except ServiceError as exc:
                code = code_of(exc)
                await servicer_context.abort(code, exc.message, trailing_metadata(exc) + echo)
            except asyncio.CancelledError:  # the client cancelled, or its deadline passed
                remaining = servicer_context.time_remaining()
                expired = remaining is not None and remaining <= 0
                code = grpc.StatusCode.DEADLINE_EXCEEDED if expired else grpc.StatusCode.CANCELLED
                raise
            except grpc.aio.AbortError:  # the behaviour ended the call itself
                code = servicer_context.code() or grpc.StatusCode.UNKNOWN  # type: ignore[assignment]
                raise
            except Exception:
                log.exception("unhandled error in gRPC %s", method)
                code = grpc.StatusCode.INTERNAL
                await servicer_context.abort(code, f"internal server error (request id {request_id})", echo)
            finally:
                self.bodies.release(held)
                self.metrics.in_flight.dec()
                self._record(method, state, code, time.perf_counter() - started, servicer_context)
                context.end(token)

        return answer

    def _record(self, method: str, state: context.RequestContext, code: grpc.StatusCode, elapsed: float,
                servicer_context: grpc.aio.ServicerContext) -> None:
        key = (state.model, method, code.name)
        children = self._children.get(key)
        if children is None:
            children = (self.metrics.requests.labels(PROTOCOL, state.model, method, code.name),
                        self.metrics.request_latency.labels(PROTOCOL, state.model, method))
            self._children[key] = children
        children[0].inc()
        children[1].observe(elapsed)
        if self.settings.access_log or code != grpc.StatusCode.OK:
            log.info("gRPC %s %s", method, code.name, extra={
                "method": "gRPC", "path": method, "status": code.name, "duration_ms": round(elapsed * 1000, 3),
                "model": state.model, "client": servicer_context.peer()})
