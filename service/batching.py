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
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from service.errors import InferenceFailed, Overloaded, ServiceUnavailable

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
        # Worker threads take batches from a plain queue and hand results back with one
        # call_soon_threadsafe: cheaper than run_in_executor's chained futures on every batch.
        self._work: queue.SimpleQueue[_Batch | None] = queue.SimpleQueue()
        self._workers: list[threading.Thread] = []
        self._loop: asyncio.AbstractEventLoop | None = None

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
        if not self._workers:
            self._start_workers(loop)
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
            self._work.put(batch)
        self._settle()

    def _start_workers(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        for index in range(self.config.instances):
            worker = threading.Thread(target=self._worker, name=f"infer-{self.name}-{index}", daemon=True)
            worker.start()
            self._workers.append(worker)

    def _worker(self) -> None:
        assert self._loop is not None
        while (batch := self._work.get()) is not None:
            try:
                outcome, error = self._compute(batch), None
            except BaseException as exc:  # reported to the batch's callers, never lost in this thread
                outcome, error = None, exc
            try:
                self._loop.call_soon_threadsafe(self._finish, batch, outcome, error)
            except RuntimeError:  # the loop is closed: nobody is waiting any more
                return

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

    def _finish(self, batch: _Batch, outcome: tuple[dict[str, np.ndarray], float] | None,
                error: BaseException | None) -> None:
        self._running -= 1
        if error is not None or outcome is None:
            log.error("batch of %d requests failed on %s: %r", len(batch.items), self.name, error)
            for item in batch.items:
                if not item.future.done():
                    item.future.set_exception(error if isinstance(error, ServiceUnavailable)
                                              else InferenceFailed(f"inference failed on {self.name}"))
        else:
            results, compute_s = outcome
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
            for _ in self._workers:
                self._work.put(None)
