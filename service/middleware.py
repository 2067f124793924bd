"""One ASGI middleware for what every HTTP request needs: an id, the body-size limit (enforced
while the body is read), security headers, the answer to every error (a ServiceError with its
status, anything else a logged 500), metrics and the access log."""

from __future__ import annotations

import logging
import re
import socket
import time
import uuid
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import context
from service.config import Settings
from service.errors import PayloadTooLarge, ServiceError
from service.jsonio import dumps
from service.metrics import Metrics

log = logging.getLogger("mnist_serve.access")
REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
COMMON_HEADERS = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer")]
PAGE_HEADERS = [
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", b"default-src 'self'; img-src 'self' data: blob:; style-src 'self'; "
                                 b"script-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'self'"),
]


class ServiceMiddleware:
    def __init__(self, app: ASGIApp, settings: Settings, metrics: Metrics) -> None:
        self.app = app
        self.settings = settings
        self.metrics = metrics
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        served_by = [(b"x-served-by", socket.gethostname().encode())] if settings.served_by else []
        self._common_headers = COMMON_HEADERS + served_by

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = ""
        declared_length = None
        for key, value in scope["headers"]:
            if key == b"x-request-id":
                candidate = value.decode("latin-1")
                request_id = candidate if REQUEST_ID.match(candidate) else ""
            elif key == b"content-length":
                declared_length = value
        request, token = context.begin(request_id or uuid.uuid4().hex)
        path: str = scope["path"]
        extra = [(b"x-request-id", request.request_id.encode())] + self._common_headers
        if path == "/" or path.startswith("/static/"):
            extra += PAGE_HEADERS
        status = 500
        response_started = False
        limit = self.settings.max_body_bytes

        async def send_with_headers(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
                message["headers"] = list(message.get("headers", [])) + extra
            await send(message)

        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise PayloadTooLarge(f"request body exceeds the max_body_bytes limit of {limit} bytes")
            return message

        self.metrics.in_flight.inc()
        try:
            if declared_length is not None and _too_long(declared_length, limit):
                await _answer(send_with_headers, 413, f"request body of {declared_length.decode(errors='replace')} "
                                                      f"bytes exceeds the max_body_bytes limit of {limit} bytes",
                              close=True)
            else:
                await self.app(scope, limited_receive, send_with_headers)
        except ServiceError as exc:
            if response_started:
                raise
            await _answer(send_with_headers, exc.status_code, exc.message, exc.headers)
        except Exception:
            log.exception("unhandled error in %s %s", scope["method"], path)
            if response_started:
                raise
            await _answer(send_with_headers, 500, f"internal server error (request id {request.request_id})")
        finally:
            self.metrics.in_flight.dec()
            self._record(scope, request, status, time.perf_counter() - started)
            context.end(token)

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


def _too_long(declared: bytes, limit: int) -> bool:
    try:
        return int(declared) > limit
    except ValueError:
        return False


async def _answer(send: Send, status: int, message: str, headers: dict[str, str] | None = None,
                  close: bool = False) -> None:
    body = dumps({"error": message})
    raw_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw_headers += [(key.lower().encode("latin-1"), value.encode("latin-1")) for key, value in (headers or {}).items()]
    if close:
        raw_headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})
