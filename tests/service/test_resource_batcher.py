"""The batcher's resource rules alone (real numpy work, real threads): admission by images of
compute, large requests in max_batch_size chunks that take turns with others, caller deadlines,
cancellation before compute, draining with chunks in flight, and memory given back when idle."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from service.batching import BatchingConfig, DeadlineExceeded, DynamicBatcher
from service.errors import Overloaded, ServiceUnavailable
from tests.service.test_batching import RecordingModel, images, run


def test_the_queue_admits_by_images_not_by_requests() -> None:
    async def scenario() -> None:
        model = RecordingModel()
        model.gate.clear()
        batcher = DynamicBatcher(model.run, BatchingConfig(max_queue_images=10, max_queue_size=256))
        big = asyncio.create_task(batcher.submit(images([1.0] * 8), ["sum"]))
        await asyncio.sleep(0.01)
        assert batcher.queued_images == 8
        with pytest.raises(Overloaded) as refused:
            await batcher.submit(images([1.0] * 3), ["sum"])
        assert "max_queue_images" in refused.value.message and "10" in refused.value.message
        fits = asyncio.create_task(batcher.submit(images([2.0, 2.0]), ["sum"]))  # 8 + 2 = 10: admitted
        await asyncio.sleep(0.01)
        model.gate.set()
        await asyncio.gather(big, fits)
        assert batcher.queued_images == 0
        await batcher.drain(1)

    run(scenario())


def test_a_lone_request_larger_than_the_queue_is_admitted() -> None:
    async def scenario() -> None:
        batcher = DynamicBatcher(RecordingModel().run, BatchingConfig(max_queue_images=4, max_batch_size=4))
        result = await batcher.submit(images([1.0] * 9), ["sum"])
        assert len(result.outputs["sum"]) == 9
        await batcher.drain(1)

    run(scenario())


def test_chunks_of_a_large_request_take_turns_with_other_requests() -> None:
    """One chunk of the big request is queued at a time, so a request that arrives while it runs
    is computed before the big request's remaining chunks, not after all of them."""
    async def scenario() -> None:
        model = RecordingModel(delay_s=0.02)
        batcher = DynamicBatcher(model.run, BatchingConfig(max_batch_size=4))
        big = asyncio.create_task(batcher.submit(images([float(v) for v in range(40)]), ["sum"]))
        await asyncio.sleep(0.03)  # the big request's first chunks have run
        small = await batcher.submit(images([1000.0]), ["sum"])
        assert not big.done(), "the small request waited for the whole big one"
        result = await big
        assert result.outputs["sum"] == pytest.approx([float(v) for v in range(40)], abs=1e-3)
        assert small.outputs["sum"] == pytest.approx([1000.0], rel=1e-5)
        assert max(size for size, _ in model.batches) <= 4
        await batcher.drain(1)

    run(scenario())


def test_a_caller_deadline_drops_the_request_before_compute_with_504() -> None:
    async def scenario() -> None:
        model = RecordingModel()
        model.gate.clear()
        batcher = DynamicBatcher(model.run, BatchingConfig(timeout_s=10))
        running = asyncio.create_task(batcher.submit(images([1.0]), ["sum"]))
        await asyncio.sleep(0.01)
        late = asyncio.create_task(batcher.submit(images([2.0]), ["sum"], deadline=time.monotonic() + 0.05))
        await asyncio.sleep(0.1)
        model.gate.set()
        await running
        with pytest.raises(DeadlineExceeded) as expired:
            await late
        assert expired.value.status_code == 504
        assert [size for size, _ in model.batches] == [1]
        await batcher.drain(1)

    run(scenario())


def test_a_cancelled_large_request_stops_being_computed() -> None:
    async def scenario() -> None:
        model = RecordingModel(delay_s=0.02)
        batcher = DynamicBatcher(model.run, BatchingConfig(max_batch_size=4))
        big = asyncio.create_task(batcher.submit(images([1.0] * 400), ["sum"]))
        await asyncio.sleep(0.07)
        big.cancel()
        await asyncio.sleep(0.1)
        computed = sum(size for size, _ in model.batches)
        assert computed < 40, f"{computed} of 400 images computed after the cancel"
        assert batcher.queued_images == 0 and batcher.queue_depth == 0
        await batcher.drain(1)

    run(scenario())


def test_a_batch_only_a_cancelled_request_wanted_is_not_run() -> None:
    """The request waits behind a running batch when its only caller cancels (a client that went
    away, a gRPC deadline): no batch is run for it."""
    async def scenario() -> None:
        model = RecordingModel()
        started = threading.Event()
        release = threading.Event()
        calls: list[int] = []

        def slow_then_record(batch: np.ndarray, outputs: list[str]) -> dict[str, np.ndarray]:
            calls.append(len(batch))
            if len(calls) == 1:
                started.set()
                release.wait(5)
            return model.run(batch, outputs)

        batcher = DynamicBatcher(slow_then_record, BatchingConfig(instances=1))
        first = asyncio.create_task(batcher.submit(images([1.0]), ["sum"]))
        await asyncio.to_thread(started.wait, 5)
        gone = asyncio.create_task(batcher.submit(images([2.0, 2.0]), ["sum"]))
        await asyncio.sleep(0.01)
        gone.cancel()
        release.set()
        await first
        await asyncio.sleep(0.05)
        assert calls == [1], calls
        await batcher.drain(1)

    run(scenario())


def test_drain_finishes_every_chunk_of_an_admitted_request() -> None:
    async def scenario() -> None:
        model = RecordingModel(delay_s=0.01)
        batcher = DynamicBatcher(model.run, BatchingConfig(max_batch_size=4))
        big = asyncio.create_task(batcher.submit(images([3.0] * 30), ["sum"]))
        await asyncio.sleep(0.02)
        assert await batcher.drain(5)
        assert len((await big).outputs["sum"]) == 30
        with pytest.raises(ServiceUnavailable):
            await batcher.submit(images([1.0]), ["sum"])

    run(scenario())


def test_drain_past_its_grace_answers_what_is_still_queued_with_503() -> None:
    async def scenario() -> None:
        model = RecordingModel()
        model.gate.clear()
        batcher = DynamicBatcher(model.run, BatchingConfig())
        running = asyncio.create_task(batcher.submit(images([1.0]), ["sum"]))
        await asyncio.sleep(0.01)
        queued = asyncio.create_task(batcher.submit(images([2.0]), ["sum"]))
        await asyncio.sleep(0.01)
        assert not await batcher.drain(0.05)
        with pytest.raises(ServiceUnavailable, match="grace period"):
            await queued
        model.gate.set()
        await running

    run(scenario())


def test_an_idle_batcher_gives_memory_back_once() -> None:
    async def scenario() -> None:
        releases: list[float] = []
        model = RecordingModel()
        batcher = DynamicBatcher(model.run, BatchingConfig(release_after_idle_s=0.05),
                                 release_memory=lambda: releases.append(time.monotonic()))
        await batcher.submit(images([1.0]), ["sum"])
        await asyncio.sleep(0.02)
        await batcher.submit(images([1.0]), ["sum"])  # activity postpones the release
        assert releases == []
        await asyncio.sleep(0.2)
        assert len(releases) == 1
        await asyncio.sleep(0.2)
        assert len(releases) == 1, "released again without any work in between"
        await batcher.submit(images([1.0]), ["sum"])
        await asyncio.sleep(0.2)
        assert len(releases) == 2
        await batcher.drain(1)

    run(scenario())
