"""Prometheus metrics, one registry per app. Triton's counterpart of each is in docs/metrics.md.
With several workers (PROMETHEUS_MULTIPROC_DIR set by the supervisor) every worker writes its
values to that directory and /metrics sums them: counters and histograms add up, the queue depth
and in-flight gauges are summed over live workers, model_info is the maximum over live workers."""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from service.batching import BatchObserver

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        # protocol: http or grpc; endpoint: the route template or the gRPC method; status: the HTTP
        # status or the gRPC status code's name (OK, INVALID_ARGUMENT, ...)
        self.requests = Counter("mnist_serve_requests", "requests by protocol, model, endpoint and status",
                                ["protocol", "model", "endpoint", "status"], registry=r)
        self.request_latency = Histogram("mnist_serve_request_duration_seconds", "request latency, end to end",
                                         ["protocol", "model", "endpoint"], buckets=LATENCY_BUCKETS, registry=r)
        self.queue_time = Histogram("mnist_serve_queue_duration_seconds", "time a request waited in the batcher",
                                    ["model"], buckets=LATENCY_BUCKETS, registry=r)
        self.compute_time = Histogram("mnist_serve_compute_duration_seconds", "ONNX Runtime time per batch",
                                      ["model"], buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("mnist_serve_batch_size", "images per executed batch", ["model"],
                                    buckets=BATCH_BUCKETS, registry=r)
        self.inferences = Counter("mnist_serve_inferences", "images inferred", ["model"], registry=r)
        self.executions = Counter("mnist_serve_executions", "batches executed", ["model"], registry=r)
        self.queue_depth = Gauge("mnist_serve_queue_depth", "requests waiting in the batcher", ["model"], registry=r,
                                 multiprocess_mode="livesum")
        self.in_flight = Gauge("mnist_serve_in_flight_requests", "requests being handled (HTTP and gRPC)", registry=r,
                                multiprocess_mode="livesum")
        self.model_info = Gauge("mnist_serve_model_info", "loaded model versions (1 = loaded)",
                                ["model", "version", "provider", "framework", "architecture"], registry=r,
                                multiprocess_mode="livemax")
        self.model_load_failures = Counter("mnist_serve_model_load_failures", "model loads refused", ["model"], registry=r)

    def observer(self, model_label: str) -> BatchObserver:
        return _ModelObserver(self, model_label)

    def render(self) -> bytes:
        shared = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if not shared:
            return generate_latest(self.registry)
        combined = CollectorRegistry()
        multiprocess.MultiProcessCollector(combined, path=shared)
        return generate_latest(combined)


class _ModelObserver(BatchObserver):
    """Label children resolved once, so the hot path only does arithmetic."""

    def __init__(self, metrics: Metrics, model: str) -> None:
        self._depth = metrics.queue_depth.labels(model)
        self._queue = metrics.queue_time.labels(model)
        self._compute = metrics.compute_time.labels(model)
        self._batch = metrics.batch_size.labels(model)
        self._inferences = metrics.inferences.labels(model)
        self._executions = metrics.executions.labels(model)

    def queue_depth(self, depth: int) -> None:
        self._depth.set(depth)

    def batch_done(self, images: int, requests: int, queue_times: list[float], compute_s: float) -> None:
        for seconds in queue_times:
            self._queue.observe(seconds)
        self._compute.observe(compute_s)
        self._batch.observe(images)
        self._inferences.inc(images)
        self._executions.inc()
