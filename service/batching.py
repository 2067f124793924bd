"""The dynamic batcher: a bounded queue per model version, merged into one session run, split back.

Dispatch happens as soon as an instance is free, so a lone client never waits; while every
instance is busy, requests pile up and the next free instance takes up to `max_batch_size`
images at once. With `max_queue_delay_s` > 0 a free instance waits up to that long (from the
oldest request's arrival) for a fuller batch. Requests that want different outputs share a
batch: the batch computes the union of their outputs and each request gets its own subset.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from service.errors import Overloaded, ServiceUnavailable

log = logging.getLogger(__name__)

RunFunction = Callable[[np.ndarray, Sequence[str]], dict[str, np.ndarray]]


@dataclass(frozen=True)
class BatchingConfig:
    max_batch_size: int = 64
    max_queue_delay_s: float = 0.0
    max_queue_size: int = 256
    instances: int = 1
    timeout_s: float = 10.0


@dataclass
class BatchResult:
    outputs: dict[str, np.ndarray]
    queue_s: float
    compute_s: float
    batch_size: int


class BatchObserver:
    """Hooks for metrics; the default does nothing."""

    def queue_depth(self, depth: int) -> None: ...

    def batch_done(self, images: int, requests: int, queue_times: list[float], compute_s: float) -> None: ...


@dataclass
class _Pending:
    images: np.ndarray
    outputs: tuple[str, ...]
    future: asyncio.Future
    enqueued: float
    deadline: float


@dataclass
class _Batch:
    items: list[_Pending]
    outputs: list[str]
    started: float = field(default_factory=time.monotonic)


class DynamicBatcher:
    def __init__(self, run: RunFunction, config: BatchingConfig, name: str = "", observer: BatchObserver | None = None) -> None:
        self._run = run
        self.config = config
        self.name = name
        self._observer = observer or BatchObserver()
        self._queue: deque[_Pending] = deque()
        self._running = 0
        self._closed = False
        self._timer: asyncio.TimerHandle | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self._executor = ThreadPoolExecutor(max_workers=config.instances, thread_name_prefix=f"infer-{name}")

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    @property
    def busy(self) -> int:
        return self._running

    @property
    def closed(self) -> bool:
        """Draining or drained: takes no new requests."""
        return self._closed

    async def submit(self, images: np.ndarray, outputs: Sequence[str]) -> BatchResult:
        """Queue `images` [n, 1, 28, 28]; resolves with this request's own outputs."""
        if self._closed:
            raise ServiceUnavailable(f"model {self.name} is shutting down")
        if len(self._queue) >= self.config.max_queue_size:
            raise Overloaded(f"model {self.name} queue is full: {self.config.max_queue_size} requests waiting, "
                             "the max_queue_size limit; retry later")
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        pending = _Pending(images, tuple(outputs), loop.create_future(), now, now + self.config.timeout_s)
        self._queue.append(pending)
        self._idle.clear()
        self._observer.queue_depth(len(self._queue))
        self._dispatch()
        return await pending.future

    def _dispatch(self) -> None:
        while self._queue and self._running < self.config.instances:
            if self.config.max_queue_delay_s > 0 and not self._closed:
                queued_images = sum(len(p.images) for p in self._queue)
                wait = self._queue[0].enqueued + self.config.max_queue_delay_s - time.monotonic()
                if queued_images < self.config.max_batch_size and wait > 0:
                    if self._timer is None:
                        self._timer = asyncio.get_running_loop().call_later(wait, self._on_timer)
                    return
            batch = self._take_batch()
            if batch is None:
                continue
            self._running += 1
            future = asyncio.get_running_loop().run_in_executor(self._executor, self._compute, batch)
            future.add_done_callback(lambda done, batch=batch: self._finish(batch, done))
        self._settle()

    def _on_timer(self) -> None:
        self._timer = None
        self._dispatch()

    def _take_batch(self) -> _Batch | None:
        """Pop requests up to max_batch_size images; drop cancelled and expired ones on the way.
        A request larger than max_batch_size runs alone, whole."""
        items: list[_Pending] = []
        images = 0
        now = time.monotonic()
        while self._queue:
            head = self._queue[0]
            if head.future.done():  # cancelled: the client went away
                self._queue.popleft()
                continue
            if now > head.deadline:
                self._queue.popleft()
                head.future.set_exception(ServiceUnavailable(
                    f"request waited {now - head.enqueued:.1f}s in the {self.name} queue, over the "
                    f"{self.config.timeout_s:g}s timeout; retry later"))
                continue
            if items and images + len(head.images) > self.config.max_batch_size:
                break
            items.append(self._queue.popleft())
            images += len(head.images)
        self._observer.queue_depth(len(self._queue))
        if not items:
            return None
        outputs = sorted({name for item in items for name in item.outputs})
        return _Batch(items=items, outputs=outputs)

    def _compute(self, batch: _Batch) -> tuple[dict[str, np.ndarray], float]:
        started = time.monotonic()
        merged = batch.items[0].images if len(batch.items) == 1 else np.concatenate([i.images for i in batch.items])
        results = self._run(merged, batch.outputs)
        return results, time.monotonic() - started

    def _finish(self, batch: _Batch, done: asyncio.Future) -> None:
        self._running -= 1
        try:
            error = done.exception()
        except asyncio.CancelledError as exc:
            error = exc
        if error is not None:
            log.error("batch of %d requests failed on %s: %r", len(batch.items), self.name, error)
            for item in batch.items:
                if not item.future.done():
                    item.future.set_exception(error if isinstance(error, ServiceUnavailable)
                                              else ServiceUnavailable(f"inference failed on {self.name}"))
        else:
            results, compute_s = done.result()
            total_images = sum(len(item.images) for item in batch.items)
            start = 0
            queue_times = []
            for item in batch.items:
                end = start + len(item.images)
                queue_s = batch.started - item.enqueued
                queue_times.append(queue_s)
                if not item.future.done():
                    own = {name: results[name][start:end] for name in item.outputs}
                    item.future.set_result(BatchResult(own, queue_s, compute_s, total_images))
                start = end
            self._observer.batch_done(start, len(batch.items), queue_times, compute_s)
        self._dispatch()

    def _settle(self) -> None:
        if not self._queue and self._running == 0:
            self._idle.set()

    async def drain(self, timeout: float | None = None) -> bool:
        """Stop taking requests, finish what is queued and running. True when everything finished."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self._dispatch()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
            return True
        except asyncio.TimeoutError:
            return False
        finally:
            self._executor.shutdown(wait=False, cancel_futures=False)
