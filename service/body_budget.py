"""Request bytes held by the whole server, HTTP bodies and gRPC messages together, against max_pending_body_bytes."""

from __future__ import annotations

from service.errors import Overloaded


class BodyBudget:
    """One counter per process, shared by the HTTP middleware and the gRPC interceptor. A request is
    refused (503 / RESOURCE_EXHAUSTED, retry later) when others already hold bytes and its own would
    pass the limit; one request alone is bounded by max_body_bytes instead."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0

    def hold(self, size: int, already_held_by_this_request: int = 0) -> None:
        held = self.held
        if held - already_held_by_this_request > 0 and held + size > self.limit:
            raise Overloaded(f"the server is holding {held} bytes of request bodies, the max_pending_body_bytes "
                             f"limit is {self.limit}; retry later")
        self.held = held + size

    def release(self, size: int) -> None:
        self.held -= size
