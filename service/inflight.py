"""What a request in progress holds, and how it ends early.

The HTTP middleware opens one `InFlight` per request (`scope`) in the request's own task. The data
plane then (1) registers what must be given back when the request ends (`hold`: its share of the
server's response budget), and (2) marks the stretch where the request only waits for the model
(`cancellable`): if the client disconnects there, the request's task is cancelled, so its queued
work is dropped before compute. Outside an HTTP request (gRPC, tests) there is no InFlight:
`hold` says so and the caller gives back itself; gRPC cancels its own handler tasks.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from starlette.types import Message

from service.errors import ServiceError

Receive = Callable[[], Awaitable[Message]]


class ClientGone(ServiceError):
    """The client closed its connection before the answer was ready; nobody reads this status
    (499, nginx's "client closed request"), it is what the logs and metrics record."""

    status_code = 499


@dataclass
class InFlight:
    task: asyncio.Task | None
    receive: Receive | None = None  # the connection's own receive, to hear a disconnect
    body_complete: bool = False
    disconnected: bool = False
    cancelled_by_us: bool = False
    _cancellable: int = 0
    _watcher: asyncio.Task | None = None
    _releases: list[Callable[[], None]] = field(default_factory=list)

    # ---- reservations ----------------------------------------------------------------------
    def hold(self, release: Callable[[], None]) -> None:
        self._releases.append(release)

    def release_all(self) -> None:
        releases, self._releases = self._releases, []
        for release in releases:
            release()

    # ---- disconnects -----------------------------------------------------------------------
    def watch(self) -> None:
        """Listen for the client going away (only once the body has been read: before that, the
        app's own reads would be stolen)."""
        if self._watcher is None and self.body_complete and self.receive is not None and not self.disconnected:
            self._watcher = asyncio.get_running_loop().create_task(self._listen(self.receive))

    async def _listen(self, receive: Receive) -> None:
        message = await receive()
        if message["type"] == "http.disconnect":
            self.disconnected = True
            if self._cancellable and self.task is not None:
                self.cancelled_by_us = True
                self.task.cancel()

    def stop_watching(self) -> None:
        """The response is starting: from here a disconnect costs nothing worth saving."""
        if self._watcher is not None:
            self._watcher.cancel()
            self._watcher = None


_current: contextvars.ContextVar[InFlight | None] = contextvars.ContextVar("in_flight", default=None)


@contextmanager
def scope(flight: InFlight) -> Iterator[InFlight]:
    token = _current.set(flight)
    try:
        yield flight
    finally:
        flight.stop_watching()
        flight.release_all()
        _current.reset(token)


def current() -> InFlight | None:
    return _current.get()


def hold(release: Callable[[], None]) -> bool:
    """Give back with `release` when the current request ends. False when there is no request
    scope: the caller must give back itself."""
    flight = _current.get()
    if flight is None:
        return False
    flight.hold(release)
    return True


@contextmanager
def cancellable(watch: bool = True) -> Iterator[None]:
    """Inside: the request only waits for work done on its behalf, and a client that goes away
    cancels it. A client already gone is refused before anything is queued. `watch=False` when
    the wait will be too short to be worth listening for (one more task per request)."""
    flight = _current.get()
    if flight is None:
        yield
        return
    if flight.disconnected:
        raise ClientGone("the client closed the connection before its request was queued")
    if watch:
        flight.watch()
    flight._cancellable += 1
    try:
        yield
    finally:
        flight._cancellable -= 1
