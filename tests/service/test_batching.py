"""The dynamic batcher alone, with a fake-free run function: real numpy work, real threads, real timing."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence

import numpy as np
import pytest

from service.batching import BatchingConfig, DynamicBatcher
from service.errors import Overloaded, ServiceUnavailable


class RecordingModel:
    """Computes outputs that identify each image (its sum) and records every batch it ran."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.batches: list[tuple[int, tuple[str, ...]]] = []
        self.lock = threading.Lock()
        self.gate = threading.Event()
        self.gate.set()

    def run(self, batch: np.ndarray, outputs: Sequence[str]) -> dict[str, np.ndarray]:
        self.gate.wait(5)
        with self.lock:
            self.batches.append((len(batch), tuple(outputs)))
        if self.delay_s:
            time.sleep(self.delay_s)
        sums = batch.reshape(len(batch), -1).sum(axis=1)
        return {name: sums * (index + 1) for index, name in enumerate(outputs)}


def images(values: Sequence[float]) -> np.ndarray:
    return np.stack([np.full((1, 28, 28), v / 784, np.float32) for v in values])


def run(coro):  # noqa: ANN001, ANN201
    return asyncio.run(coro)


def test_lone_request_runs_at_once_even_with_a_queue_delay() -> None:
    async def scenario() -> float:
        model = RecordingModel()
        batcher = DynamicBatcher(model.run, BatchingConfig(max_queue_delay_s=0.0))
        started = time.monotonic()
        result = await batcher.submit(images([3.0]), ["sum"])
        assert result.outputs["sum"] == pytest.approx([3.0], rel=1e-5)
        await batcher.drain(1)
        return time.monotonic() - started

    assert run(scenario()) < 0.05


def test_concurrent_requests_are_merged_and_split_back_in_order() -> None:
    async def scenario() -> None:
        model = RecordingModel(delay_s=0.05)
        batcher = DynamicBatcher(model.run, BatchingConfig(max_batch_size=64))
        first = asyncio.create_task(batcher.submit(images([1.0]), ["sum"]))
        await asyncio.sleep(0.01)  # the first batch is running; the rest queue up behind it
        rest = [asyncio.create_task(batcher.submit(images([10.0 * i, 10.0 * i + 1]), ["sum"])) for i in range(1, 11)]
        results = await asyncio.gather(first, *rest)
        assert results[0].outputs["sum"] == pytest.approx([1.0], rel=1e-5)
        for i, result in enumerate(results[1:], start=1):
            assert result.outputs["sum"] == pytest.approx([10.0 * i, 10.0 * i + 1], rel=1e-5)
        assert [size for size, _ in model.batches] == [1, 20]
        await batcher.drain(1)

    run(scenario())


def test_batches_never_exceed_max_batch_size_and_a_big_request_runs_in_chunks() -> None:
    async def scenario() -> None:
        model = RecordingModel(delay_s=0.02)
        batcher = DynamicBatcher(model.run, BatchingConfig(max_batch_size=4))
        tasks = [asyncio.create_task(batcher.submit(images([1.0, 2.0, 3.0]), ["sum"])) for _ in range(5)]
        big = asyncio.create_task(batcher.submit(images([float(v) for v in range(9)]), ["sum"]))
        *_, whole = await asyncio.gather(*tasks, big)
        assert whole.outputs["sum"] == pytest.approx([float(v) for v in range(9)], abs=1e-4)  # chunks put back in order
        sizes = [size for size, _ in model.batches]
        assert max(sizes) <= 4 and sum(sizes) == 5 * 3 + 9
        await batcher.drain(1)

    run(scenario())


def test_different_outputs_share_a_batch_as_their_union() -> None:
    async def scenario() -> None:
        model = RecordingModel(delay_s=0.05)
        batcher = DynamicBatcher(model.run, BatchingConfig())
        blocker = asyncio.create_task(batcher.submit(images([1.0]), ["a"]))
        await asyncio.sleep(0.01)
        wants_a = asyncio.create_task(batcher.submit(images([2.0]), ["a"]))
        wants_b = asyncio.create_task(batcher.submit(images([3.0]), ["b"]))
        await blocker
        result_a, result_b = await asyncio.gather(wants_a, wants_b)
        assert set(result_a.outputs) == {"a"} and set(result_b.outputs) == {"b"}
        assert model.batches[-1] == (2, ("a", "b"))
        assert result_b.outputs["b"] == pytest.approx([6.0], rel=1e-5)  # "b" is the second output: sums * 2
        await batcher.drain(1)

    run(scenario())


def test_full_queue_answers_overloaded_at_once() -> None:
    async def scenario() -> None:
        model = RecordingModel()
        model.gate.clear()
        batcher = DynamicBatcher(model.run, BatchingConfig(max_queue_size=2))
        running = asyncio.create_task(batcher.submit(images([1.0]), ["sum"]))
        await asyncio.sleep(0.01)
        queued = [asyncio.create_task(batcher.submit(images([1.0]), ["sum"])) for _ in range(2)]
        await asyncio.sleep(0.01)
        with pytest.raises(Overloaded) as refused:
            await batcher.submit(images([1.0]), ["sum"])
        assert refused.value.status_code == 503 and refused.value.headers["Retry-After"]
        model.gate.set()
        await asyncio.gather(running, *queued)
        await batcher.drain(1)

    run(scenario())


def test_requests_past_their_timeout_are_dropped_before_compute() -> None:
    async def scenario() -> None:
        model = RecordingModel()
        model.gate.clear()
        batcher = DynamicBatcher(model.run, BatchingConfig(timeout_s=0.05))
        running = asyncio.create_task(batcher.submit(images([1.0]), ["sum"]))
        await asyncio.sleep(0.01)
        late = asyncio.create_task(batcher.submit(images([2.0]), ["sum"]))
        await asyncio.sleep(0.1)
        model.gate.set()
        await running
        with pytest.raises(ServiceUnavailable, match="timeout"):
            await late
        assert [size for size, _ in model.batches] == [1]
        await batcher.drain(1)

    run(scenario())


def test_cancelled_requests_are_not_computed() -> None:
    async def scenario() -> None:
        model = RecordingModel()
        model.gate.clear()
        batcher = DynamicBatcher(model.run, BatchingConfig())
        running = asyncio.create_task(batcher.submit(images([1.0]), ["sum"]))
        await asyncio.sleep(0.01)
        gone = asyncio.create_task(batcher.submit(images([2.0, 2.0]), ["sum"]))
        kept = asyncio.create_task(batcher.submit(images([3.0]), ["sum"]))
        await asyncio.sleep(0.01)
        gone.cancel()
        model.gate.set()
        await asyncio.gather(running, kept)
        assert [size for size, _ in model.batches] == [1, 1]
        await batcher.drain(1)

    run(scenario())


def test_queue_delay_gathers_a_fuller_batch() -> None:
    async def scenario() -> None:
        model = RecordingModel()
        batcher = DynamicBatcher(model.run, BatchingConfig(max_queue_delay_s=0.05, max_batch_size=8))
        tasks = []
        for _ in range(4):
            tasks.append(asyncio.create_task(batcher.submit(images([1.0]), ["sum"])))
            await asyncio.sleep(0.005)
        await asyncio.gather(*tasks)
        assert [size for size, _ in model.batches] == [4]
        await batcher.drain(1)

    run(scenario())


def test_drain_finishes_queued_work_then_refuses_new_requests() -> None:
    async def scenario() -> None:
        model = RecordingModel(delay_s=0.02)
        batcher = DynamicBatcher(model.run, BatchingConfig(max_batch_size=1))
        tasks = [asyncio.create_task(batcher.submit(images([float(i)]), ["sum"])) for i in range(5)]
        await asyncio.sleep(0)
        assert await batcher.drain(5)
        results = await asyncio.gather(*tasks)
        assert [float(r.outputs["sum"][0]) for r in results] == pytest.approx([0.0, 1.0, 2.0, 3.0, 4.0], abs=1e-4)
        with pytest.raises(ServiceUnavailable):
            await batcher.submit(images([1.0]), ["sum"])

    run(scenario())


def test_instances_run_batches_concurrently() -> None:
    async def scenario() -> float:
        model = RecordingModel(delay_s=0.1)
        batcher = DynamicBatcher(model.run, BatchingConfig(instances=2, max_batch_size=1))
        started = time.monotonic()
        await asyncio.gather(*(batcher.submit(images([1.0]), ["sum"]) for _ in range(2)))
        await batcher.drain(1)
        return time.monotonic() - started

    assert run(scenario()) < 0.18
