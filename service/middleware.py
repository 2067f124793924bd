"""One ASGI middleware for what every HTTP request needs: an id, the body's limits (its size and
the server's share, enforced while it is read, and the time to send it), security headers, the
answer to every error (a ServiceError with its status, anything else a logged 500), the request's
in-flight scope (service.inflight: reservations, cancellation when the client leaves), metrics,
the access log, and the heap given back once no request is left."""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import time
import uuid
from typing import Any

from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import context, inflight
from service.body_budget import BodyBudget
from service.config import Settings
from service.connections import RequestTimeout
from service.errors import PayloadTooLarge, ServiceError
from service.inflight import ClientGone, InFlight
from service.jsonio import dumps
from service.memory import trim_heap
from service.metrics import Metrics

log = logging.getLogger("mnist_serve.access")
REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
COMMON_HEADERS = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer")]
PAGE_HEADERS = [
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", b"default-src 'self'; img-src 'self' data: blob:; style-src 'self'; "
                                 b"script-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'self'"),
]
CLOSE = (b"connection", b"close")
# Large bodies go out in pieces, each sent once the client has taken the previous ones, so a
# request holds its response budget until the client has read (nearly) all of it.
SEND_PIECE_BYTES = 256 * 1024
CLIENT_CLOSED = 499


class _Exchange:
    """One request's state as the middleware sees it."""

    def __init__(self, declared_length: int | None, chunked: bool) -> None:
        self.declared_length = declared_length
        self.has_body = chunked or bool(declared_length)
        self.status = 500
        self.response_started = False
        self.received = 0
        self.held_body_bytes = 0
        self.body_complete = not self.has_body
        self.reading = False
        self.body_overdue = False
        self.body_timer: asyncio.TimerHandle | None = None


class ServiceMiddleware:
    def __init__(self, app: ASGIApp, settings: Settings, metrics: Metrics, bodies: BodyBudget | None = None) -> None:
        self.app = app
        self.settings = settings
        self.metrics = metrics
        self.bodies = bodies if bodies is not None else BodyBudget(settings.max_pending_body_bytes)
        self._requests = 0
        self._idle_trim: asyncio.TimerHandle | None = None
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        served_by = [(b"x-served-by", socket.gethostname().encode())] if settings.served_by else []
        self._common_headers = COMMON_HEADERS + served_by

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = ""
        declared = None
        chunked = False
        for key, value in scope["headers"]:
            if key == b"x-request-id":
                candidate = value.decode("latin-1")
                request_id = candidate if REQUEST_ID.match(candidate) else ""
            elif key == b"content-length":
                declared = value
            elif key == b"transfer-encoding":
                chunked = True
        request, token = context.begin(request_id or uuid.uuid4().hex)
        path: str = scope["path"]
        extra = [(b"x-request-id", request.request_id.encode())] + self._common_headers
        if path == "/" or path.startswith("/static/"):
            extra += PAGE_HEADERS
        declared_length = _length(declared)
        exchange = _Exchange(declared_length, chunked)
        task = asyncio.current_task()
        flight = InFlight(task, receive)
        flight.body_complete = exchange.body_complete
        limit = self.settings.max_body_bytes

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                exchange.status = message["status"]
                exchange.response_started = True
                flight.stop_watching()
                headers = list(message.get("headers", [])) + extra
                if not exchange.body_complete and CLOSE not in headers:  # unread body bytes would hold the connection
                    headers.append(CLOSE)
                message["headers"] = headers
                await send(message)
                return
            body = message.get("body", b"")
            if message["type"] != "http.response.body" or len(body) <= 2 * SEND_PIECE_BYTES:
                await send(message)
                return
            more = message.get("more_body", False)
            for start in range(0, len(body), SEND_PIECE_BYTES):
                end = start + SEND_PIECE_BYTES
                piece = {"type": "http.response.body", "body": body[start:end], "more_body": more or end < len(body)}
                await send(piece)

        async def limited_receive() -> Message:
            if exchange.body_overdue and not exchange.body_complete:
                raise self._body_timeout()
            exchange.reading = True
            try:
                message = await receive()
            finally:
                exchange.reading = False
            if message["type"] == "http.request":
                size = len(message.get("body", b""))
                exchange.received += size
                if exchange.received > limit:
                    raise PayloadTooLarge(f"request body exceeds the max_body_bytes limit of {limit} bytes")
                if exchange.declared_length is None:
                    self._hold_body(exchange, size)
                if not message.get("more_body", False):
                    exchange.body_complete = flight.body_complete = True
                    if exchange.body_timer is not None:
                        exchange.body_timer.cancel()
            return message

        def on_body_timeout() -> None:
            exchange.body_timer = None
            if exchange.body_complete:
                return
            exchange.body_overdue = True
            if exchange.reading and task is not None:
                task.cancel()

        self.metrics.in_flight.inc()
        self._begin()
        try:
            with inflight.scope(flight):
                if declared_length is not None and declared_length > limit:
                    exchange.status = 413
                    await _answer(send_with_headers, 413, f"request body of {declared_length} bytes exceeds the "
                                                          f"max_body_bytes limit of {limit} bytes", close=True)
                    return
                if declared_length:
                    self._hold_body(exchange, declared_length)
                if exchange.has_body:
                    exchange.body_timer = asyncio.get_running_loop().call_later(self.settings.body_timeout_s,
                                                                                on_body_timeout)
                await self.app(scope, limited_receive, send_with_headers)
        except ClientGone:
            exchange.status = CLIENT_CLOSED
        except ServiceError as exc:
            if exchange.response_started:
                raise
            await _answer(send_with_headers, exc.status_code, exc.message, exc.headers,
                          close=isinstance(exc, RequestTimeout))
        except ClientDisconnect:  # the client left while its body was being read
            exchange.status = CLIENT_CLOSED
        except asyncio.CancelledError:
            if not await self._answer_cancelled(scope, flight, exchange, send_with_headers):
                raise
            if task is not None:
                task.uncancel()
        except Exception:
            log.exception("unhandled error in %s %s", scope["method"], path)
            if exchange.response_started:
                raise
            await _answer(send_with_headers, 500, f"internal server error (request id {request.request_id})")
        finally:
            if exchange.body_timer is not None:
                exchange.body_timer.cancel()
            self.bodies.release(exchange.held_body_bytes)
            self._end()
            self.metrics.in_flight.dec()
            self._record(scope, request, exchange.status, time.perf_counter() - started)
            context.end(token)

    def _begin(self) -> None:
        self._requests += 1
        if self._idle_trim is not None:
            self._idle_trim.cancel()
            self._idle_trim = None

    def _end(self) -> None:
        """The last request out schedules giving the heap's free pages back: the model versions
        give theirs when their batches end, before their responses were encoded and sent."""
        self._requests -= 1
        delay = self.settings.release_memory_after_idle_s
        if self._requests == 0 and delay > 0:
            self._idle_trim = asyncio.get_running_loop().call_later(delay, self._trim_when_idle)

    def _trim_when_idle(self) -> None:
        self._idle_trim = None
        if self._requests == 0:
            asyncio.get_running_loop().run_in_executor(None, trim_heap)

    def _hold_body(self, exchange: _Exchange, size: int) -> None:
        """Count body bytes against the server's share; 503 when others already hold it."""
        self.bodies.hold(size, exchange.held_body_bytes)
        exchange.held_body_bytes += size

    def _body_timeout(self) -> RequestTimeout:
        return RequestTimeout(f"the request body did not arrive within the body_timeout_s limit of "
                              f"{self.settings.body_timeout_s:g}s")

    async def _answer_cancelled(self, scope: Scope, flight: InFlight, exchange: _Exchange, send: Send) -> bool:
        """The request's task was cancelled: by its client leaving (nothing to answer), by its body
        being overdue (408), or by the shutdown grace period running out (503). False: by
        something else, and the cancellation goes on."""
        plane = getattr(getattr(scope.get("app"), "state", None), "dataplane", None)
        if flight.cancelled_by_us:
            exchange.status = CLIENT_CLOSED
        elif exchange.body_overdue and not exchange.body_complete:
            if not exchange.response_started:
                await _answer(send, 408, self._body_timeout().message, close=True)
        elif plane is not None and plane.draining and not exchange.response_started:
            await _answer(send, 503, "the server is shutting down and this request did not finish within the "
                                     f"shutdown_grace_s grace period of {self.settings.shutdown_grace_s:g}s; retry",
                          {"Retry-After": "1"}, close=True)
        else:
            return False
        return True

    def _record(self, scope: Scope, request: context.RequestContext, status: int, elapsed: float) -> None:
        route = scope.get("route")
        endpoint = getattr(route, "path", "unmatched")
        key = (request.model, endpoint, status)
        children = self._children.get(key)
        if children is None:
            children = (self.metrics.requests.labels(request.protocol, request.model, endpoint, str(status)),
                        self.metrics.request_latency.labels(request.protocol, request.model, endpoint))
            self._children[key] = children
        children[0].inc()
        children[1].observe(elapsed)
        if self.settings.access_log or status >= 400:
            client = scope.get("client")
            log.info("%s %s %d", scope["method"], scope["path"], status, extra={
                "method": scope["method"], "path": scope["path"], "status": status,
                "duration_ms": round(elapsed * 1000, 3), "model": request.model, "client": client[0] if client else ""})


def _length(declared: bytes | None) -> int | None:
    if declared is None:
        return None
    try:
        return int(declared)
    except ValueError:
        return None


async def _answer(send: Send, status: int, message: str, headers: dict[str, str] | None = None,
                  close: bool = False) -> None:
    body = dumps({"error": message})
    raw_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw_headers += [(key.lower().encode("latin-1"), value.encode("latin-1")) for key, value in (headers or {}).items()]
    if close:
        raw_headers.append(CLOSE)
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})
