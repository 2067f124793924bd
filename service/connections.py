"""Connection hygiene for uvicorn's httptools protocol: what uvicorn does not bound by itself.

uvicorn (httptools) has a keep-alive timeout but no header size limit, no time limit on the request
line and headers (a connection that sends nothing, or trickles its headers, stays open for ever),
no cap on open connections (`limit_concurrency` counts requests once their headers are parsed and
answers in plain text) and no limit on how long a client may leave its response unread. This
subclass adds, per connection:

- a connection cap: past `max_connections` a new connection is answered 503 at once and closed;
- a header size limit: past `max_header_bytes` before the headers end, 431 and close, counted on
  the bytes fed to the parser, so a 90 MB header costs what 32 KB does;
- a header timeout: the request line and headers must arrive within `header_timeout_s` of their
  first byte (of the connection, for the first request): else 408 and close, or a plain close when
  nothing was sent;
- a send timeout: a client that leaves its response unread for `send_timeout_s` while the
  transport's buffer is full is disconnected (its buffered response is dropped).

The body timeout is the middleware's (it answers 408 through the app, with the request id); the
idle keep-alive timeout is uvicorn's `timeout_keep_alive`.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from service.config import Settings
from service.errors import ServiceError
from service.jsonio import dumps

log = logging.getLogger(__name__)
# Descriptors the process needs besides its connections: models, logs, threads' pipes, the listener.
RESERVED_FILES = 256
REFUSED_LINGER_S = 1.0
WARNING_INTERVAL_S = 10.0  # refusals under a flood of connections: one log line per interval


class RequestTimeout(ServiceError):
    status_code = 408


def raw_response(status: int, reason: str, message: str, extra: tuple[tuple[str, str], ...] = ()) -> bytes:
    """A complete HTTP/1.1 error response that closes the connection, for answers given before
    (or instead of) the app: {"error": message}."""
    body = dumps({"error": message})
    head = [f"HTTP/1.1 {status} {reason}", "content-type: application/json", f"content-length: {len(body)}",
            "connection: close", *(f"{name}: {value}" for name, value in extra)]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """HttpToolsProtocol with a connection cap, a header size limit, a header timeout and a send
    timeout. `configured(settings)` makes the class uvicorn instantiates per connection."""

    max_connections = 1000
    max_header_bytes = 32 * 1024
    header_timeout_s = 10.0
    send_timeout_s = 30.0
    _refusals = 0
    _refusals_logged_at = float("-inf")

    @classmethod
    def configured(cls, settings: Settings) -> type[GuardedHttpToolsProtocol]:
        return type(cls.__name__, (cls,), {
            "max_connections": settings.max_connections, "max_header_bytes": settings.max_header_bytes,
            "header_timeout_s": settings.header_timeout_s, "send_timeout_s": settings.send_timeout_s,
        })

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._awaiting_headers = True
        self._header_bytes = 0
        self._header_timer: asyncio.TimerHandle | None = None
        self._send_timer: asyncio.TimerHandle | None = None
        self._refused = False

    # ---- the connection --------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            self._refuse_connection()
            return
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._on_header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        super().connection_lost(exc)

    def _cancel_timers(self) -> None:
        for timer in (self._header_timer, self._send_timer):
            if timer is not None:
                timer.cancel()
        self._header_timer = self._send_timer = None

    def _refuse_connection(self) -> None:
        """Answer at once, stop writing, and close soon: reading what the client sends meanwhile
        keeps its request from turning the close into a reset that would lose the answer."""
        self._refused = True
        cls = type(self)
        cls._refusals += 1
        if self.loop.time() - cls._refusals_logged_at >= WARNING_INTERVAL_S:
            log.warning("%d connection(s) refused: %d open, the max_connections limit", cls._refusals,
                        self.max_connections)
            cls._refusals, cls._refusals_logged_at = 0, self.loop.time()
        message = f"the server has {self.max_connections} open connections, the max_connections limit; retry later"
        self.transport.write(raw_response(503, "Service Unavailable", message, (("retry-after", "1"),)))
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(REFUSED_LINGER_S, self.transport.close)

    # ---- the request line and headers -----------------------------------------------------
    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        while data:
            if not self._awaiting_headers:
                super().data_received(data)
                return
            if self._header_timer is None:  # the first byte of a request on a kept-alive connection
                self._header_timer = self.loop.call_later(self.header_timeout_s, self._on_header_timeout)
            budget = self.max_header_bytes - self._header_bytes
            if len(data) <= budget:
                self._header_bytes += len(data)
                super().data_received(data)
                return
            head, data = data[:budget], data[budget:]
            self._header_bytes += len(head)
            super().data_received(head)
            if self.transport.is_closing():
                return
            if self._awaiting_headers:
                self._close_with(431, "Request Header Fields Too Large", "the request line and headers exceed the "
                                 f"max_header_bytes limit of {self.max_header_bytes} bytes")
                return

    def on_headers_complete(self) -> None:
        self._awaiting_headers = False
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._awaiting_headers = True
        self._header_bytes = 0

    def _on_header_timeout(self) -> None:
        self._header_timer = None
        if not self._awaiting_headers or self.transport.is_closing():
            return
        if self._header_bytes == 0:
            self.transport.close()  # an idle connection: nothing to answer
            return
        self._close_with(408, "Request Timeout", "the request line and headers did not arrive within the "
                         f"header_timeout_s limit of {self.header_timeout_s:g}s")

    def _close_with(self, status: int, reason: str, message: str) -> None:
        client = "%s:%d - " % self.client if self.client else ""
        log.warning("%s%d %s", client, status, message)
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.disconnected = True  # the app's answer, if any, is not written after this one
            self.cycle.message_event.set()
        self.transport.write(raw_response(status, reason, message))
        self.transport.close()

    # ---- responses nobody reads ------------------------------------------------------------
    def pause_writing(self) -> None:
        super().pause_writing()
        if self._send_timer is None:
            self._send_timer = self.loop.call_later(self.send_timeout_s, self._on_send_timeout)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None

    def _on_send_timeout(self) -> None:
        self._send_timer = None
        log.warning("%sthe client read nothing of its response for the send_timeout_s limit of %gs: disconnected",
                    "%s:%d - " % self.client if self.client else "", self.send_timeout_s)
        self.transport.abort()


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """The uvicorn.Config arguments that apply the connection settings."""
    return {"http": GuardedHttpToolsProtocol.configured(settings), "timeout_keep_alive": settings.keep_alive_timeout_s}


def ensure_file_limit(settings: Settings) -> str | None:
    """Raise this process's open-files limit so that max_connections fit (up to the hard limit);
    None when they fit, else why they cannot."""
    needed = settings.max_connections + RESERVED_FILES
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (AttributeError, OSError):  # no such limit here
        return None
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return None
    if hard == resource.RLIM_INFINITY or hard >= needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
        return None
    return (f"max_connections {settings.max_connections} needs {needed} open files but the hard limit is {hard} "
            f"(ulimit -Hn); lower max_connections to {max(1, hard - RESERVED_FILES)} or raise the limit")
