"""The dynamic batcher: a bounded queue per model version, merged into one session run, split back.

Dispatch happens as soon as an instance is free, so a lone client never waits; while every
instance is busy, requests pile up and the next free instance takes up to `max_batch_size`
images at once. With `max_queue_delay_s` > 0 a free instance waits up to that long (from the
oldest request's arrival) for a fuller batch. Requests that want different outputs share a
batch: the batch computes the union of their outputs and each request gets its own subset.

Admission is by cost: a request is admitted while the images admitted and not yet computed stay
within `max_queue_images` (and the waiting requests within `max_queue_size`). A request larger
than `max_batch_size` runs in chunks of that size, at most `instances` of them queued at once, so
other requests take turns with it and no session run is larger than a batch. A request whose
task is cancelled (its client went away, its gRPC deadline passed) or whose deadline passed is
dropped before compute, and a batch nobody waits for any more is not run. A version idle for
`release_after_idle_s` gives its session's unused memory back (`release_memory`).
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

from service.config import Settings
from service.errors import InferenceFailed, Overloaded, ServiceError, ServiceUnavailable
from service.memory import trim_heap
from service.priority import lower_current_thread

log = logging.getLogger(__name__)

RunFunction = Callable[[np.ndarray, Sequence[str]], dict[str, np.ndarray]]


class DeadlineExceeded(ServiceError):
    """The caller's own deadline (a gRPC deadline) passed before its request was computed."""

    status_code = 504


@dataclass(frozen=True)
class BatchingConfig:
    max_batch_size: int = 64
    max_queue_delay_s: float = 0.0
    max_queue_size: int = 256  # requests waiting
    max_queue_images: int = 4096  # images admitted and not yet computed
    instances: int = 1
    timeout_s: float = 10.0
    release_after_idle_s: float = 0.0  # 0: never

    @classmethod
    def from_settings(cls, settings: Settings) -> BatchingConfig:
        return cls(max_batch_size=settings.max_batch_size, max_queue_delay_s=settings.max_queue_delay_ms / 1000,
                   max_queue_size=settings.max_queue_size, max_queue_images=settings.max_queue_images,
                   instances=settings.instances, timeout_s=settings.request_timeout_s,
                   release_after_idle_s=settings.release_memory_after_idle_s)


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
    caller_deadline: float | None = None  # the caller's own, when earlier than the queue timeout


@dataclass
class _Batch:
    items: list[_Pending]
    outputs: list[str]
    started: float = field(default_factory=time.monotonic)


_RELEASE = object()  # a job for a worker: give the session's unused memory back


class DynamicBatcher:
    def __init__(self, run: RunFunction, config: BatchingConfig, name: str = "", observer: BatchObserver | None = None,
                 release_memory: Callable[[], None] | None = None) -> None:
        self._run = run
        self.config = config
        self.name = name
        self._observer = observer or BatchObserver()
        self._release_memory = release_memory
        self._queue: deque[_Pending] = deque()
        self._running = 0
        self._admitted_requests = 0
        self._admitted_images = 0
        self._closed = False
        self._stopped = False  # the workers were told to stop: nothing queued from now on is computed
        self._timer: asyncio.TimerHandle | None = None
        self._idle_timer: asyncio.TimerHandle | None = None
        self._used_since_release = False
        self._idle = asyncio.Event()
        self._idle.set()
        # Worker threads take batches from a plain queue and hand results back with one
        # call_soon_threadsafe: cheaper than run_in_executor's chained futures on every batch.
        self._work: queue.SimpleQueue[_Batch | object | None] = queue.SimpleQueue()
        self._workers: list[threading.Thread] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    @property
    def queued_images(self) -> int:
        """Images admitted and not yet computed (waiting or running)."""
        return self._admitted_images

    @property
    def busy(self) -> int:
        return self._running

    @property
    def closed(self) -> bool:
        """Draining or drained: takes no new requests."""
        return self._closed

    async def submit(self, images: np.ndarray, outputs: Sequence[str], deadline: float | None = None) -> BatchResult:
        """Queue `images` [n, 1, 28, 28]; resolves with this request's own outputs. `deadline`
        (time.monotonic()) is the caller's own: past it, the request is dropped with a 504."""
        count = len(images)
        self._admit(count)
        loop = asyncio.get_running_loop()
        if not self._workers:
            self._start_workers(loop)
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        self._admitted_requests += 1
        self._admitted_images += count
        self._idle.clear()
        try:
            if count <= self.config.max_batch_size:
                return await self._enqueue(loop, images, tuple(outputs), deadline)
            return await self._submit_chunks(loop, images, tuple(outputs), deadline)
        finally:
            self._admitted_requests -= 1
            self._admitted_images -= count
            self._settle()

    def _admit(self, count: int) -> None:
        if self._closed:
            raise ServiceUnavailable(f"model {self.name} is shutting down")
        if len(self._queue) >= self.config.max_queue_size:
            raise Overloaded(f"model {self.name} queue is full: {self.config.max_queue_size} requests waiting, "
                             "the max_queue_size limit; retry later")
        admitted = self._admitted_images
        if admitted and admitted + count > self.config.max_queue_images:
            raise Overloaded(f"model {self.name} queue is full: {admitted} images admitted and not yet computed, "
                             f"{count} more would pass the max_queue_images limit of {self.config.max_queue_images}; "
                             "retry later")

    def _enqueue(self, loop: asyncio.AbstractEventLoop, images: np.ndarray, outputs: tuple[str, ...],
                 deadline: float | None) -> asyncio.Future:
        now = time.monotonic()
        timeout = now + self.config.timeout_s
        binding = deadline if deadline is not None and deadline < timeout else None
        pending = _Pending(images, outputs, loop.create_future(), now, min(timeout, deadline or timeout), binding)
        if self._stopped:
            pending.future.set_exception(ServiceUnavailable(f"model {self.name} has shut down"))
            return pending.future
        self._queue.append(pending)
        self._observer.queue_depth(len(self._queue))
        self._dispatch()
        return pending.future

    async def _submit_chunks(self, loop: asyncio.AbstractEventLoop, images: np.ndarray, outputs: tuple[str, ...],
                             deadline: float | None) -> BatchResult:
        """max_batch_size chunks, at most `instances` queued at once; cancelled together."""
        size = self.config.max_batch_size
        waiting: deque[asyncio.Future] = deque()
        results: list[BatchResult] = []
        try:
            for start in range(0, len(images), size):
                if len(waiting) >= self.config.instances:
                    results.append(await waiting.popleft())
                waiting.append(self._enqueue(loop, images[start : start + size], outputs, deadline))
            while waiting:
                results.append(await waiting.popleft())
        finally:
            for future in waiting:
                future.cancel()
        merged = {name: np.concatenate([result.outputs[name] for result in results]) for name in outputs}
        return BatchResult(merged, sum(r.queue_s for r in results), sum(r.compute_s for r in results),
                           max(r.batch_size for r in results))

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
            self._used_since_release = True
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
        lower_current_thread()
        while (job := self._work.get()) is not None:
            if job is _RELEASE:
                self._release()
                continue
            assert isinstance(job, _Batch)
            try:
                # A batch whose every caller has gone (cancelled, answered) is not run. Reading a
                # future's state from this thread is a plain attribute read; a stale answer only
                # means one batch computed for nobody.
                wanted = not all(item.future.done() for item in job.items)
                outcome, error = (self._compute(job) if wanted else None), None
            except BaseException as exc:  # reported to the batch's callers, never lost in this thread
                outcome, error = None, exc
            try:
                self._loop.call_soon_threadsafe(self._finish, job, outcome, error)
            except RuntimeError:  # the loop is closed: nobody is waiting any more
                return

    def _release(self) -> None:
        try:
            if self._release_memory is not None:
                self._release_memory()
            trim_heap()
        except Exception:  # noqa: BLE001 - giving memory back is best effort; serving goes on
            log.exception("releasing memory of %s failed", self.name)

    def _on_timer(self) -> None:
        self._timer = None
        self._dispatch()

    def _take_batch(self) -> _Batch | None:
        """Pop requests up to max_batch_size images; drop cancelled and expired ones on the way."""
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
                head.future.set_exception(self._expired(head, now))
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

    def _expired(self, pending: _Pending, now: float) -> ServiceError:
        waited = now - pending.enqueued
        if pending.caller_deadline is not None:
            return DeadlineExceeded(f"the request's deadline passed after {waited:.1f}s in the {self.name} queue, "
                                    "before it was computed")
        return ServiceUnavailable(f"request waited {waited:.1f}s in the {self.name} queue, over the "
                                  f"{self.config.timeout_s:g}s timeout; retry later")

    def _compute(self, batch: _Batch) -> tuple[dict[str, np.ndarray], float]:
        started = time.monotonic()
        merged = batch.items[0].images if len(batch.items) == 1 else np.concatenate([i.images for i in batch.items])
        results = self._run(merged, batch.outputs)
        return results, time.monotonic() - started

    def _finish(self, batch: _Batch, outcome: tuple[dict[str, np.ndarray], float] | None,
                error: BaseException | None) -> None:
        self._running -= 1
        if error is not None:
            log.error("batch of %d requests failed on %s: %r", len(batch.items), self.name, error)
            for item in batch.items:
                if not item.future.done():
                    item.future.set_exception(error if isinstance(error, ServiceUnavailable)
                                              else InferenceFailed(f"inference failed on {self.name}"))
        elif outcome is not None:
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
        if self._admitted_requests == 0 and self._running == 0 and not self._queue:
            self._idle.set()
            if (self._used_since_release and self._release_memory is not None and not self._closed
                    and self.config.release_after_idle_s > 0 and self._idle_timer is None and self._loop is not None):
                self._idle_timer = self._loop.call_later(self.config.release_after_idle_s, self._release_when_idle)

    def _release_when_idle(self) -> None:
        self._idle_timer = None
        if self._idle.is_set() and not self._closed and self._used_since_release:
            self._used_since_release = False
            self._work.put(_RELEASE)

    async def drain(self, timeout: float | None = None) -> bool:
        """Stop taking requests, finish what is admitted (queued, running, and the remaining chunks
        of large requests). True when everything finished; otherwise what is still queued is
        answered 503."""
        self._closed = True
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self._dispatch()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
            return True
        except asyncio.TimeoutError:
            while self._queue:
                pending = self._queue.popleft()
                if not pending.future.done():
                    pending.future.set_exception(ServiceUnavailable(
                        f"model {self.name} is shutting down: the request was not computed within the grace period"))
            return False
        finally:
            self._stopped = True
            for _ in self._workers:
                self._work.put(None)
