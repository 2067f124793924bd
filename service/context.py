"""What the service knows about the request being served, wherever it is in the code: its id (for
the logs) and the model the data plane resolved for it (for the metrics' model label)."""

from __future__ import annotations

import contextvars
from dataclasses import dataclass


@dataclass
class RequestContext:
    request_id: str
    protocol: str = "http"
    model: str = ""


_current: contextvars.ContextVar[RequestContext | None] = contextvars.ContextVar("request_context", default=None)


def begin(request_id: str, protocol: str = "http") -> tuple[RequestContext, contextvars.Token]:
    context = RequestContext(request_id, protocol)
    return context, _current.set(context)


def end(token: contextvars.Token) -> None:
    _current.reset(token)


def current() -> RequestContext | None:
    return _current.get()


def record_model(name: str) -> None:
    context = _current.get()
    if context is not None:
        context.model = name
