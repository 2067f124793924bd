"""One validated settings class; every field is a `mnist-serve serve` flag and a MNIST_SERVE_<FIELD>
environment variable (the flag wins). The CLI is generated from the fields and their descriptions."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_MODELS_DIR = Path(__file__).resolve().parent.parent / "models"
ENV_PREFIX = "MNIST_SERVE_"


def available_cpus() -> int:
    """CPUs this process may use: its affinity mask, capped by a cgroup v2/v1 CPU quota."""
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        count = os.cpu_count() or 1
    quota = _cgroup_cpu_quota()
    if quota is not None:
        count = min(count, max(1, int(quota + 0.999)))
    return max(1, count)


def _cgroup_cpu_quota() -> float | None:
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_us = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        period_us = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
        return None if quota_us <= 0 else quota_us / period_us
    except (OSError, ValueError):
        return None


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid")

    # server
    host: str = Field("127.0.0.1", description="bind address (0.0.0.0: every interface)")
    port: int = Field(8000, ge=0, le=65535, description="HTTP port")
    grpc_port: int = Field(8001, ge=0, le=65535, description="gRPC port: the Open Inference Protocol, as Triton's 8001")
    grpc_enabled: bool = Field(True, description="serve the Open Inference Protocol over gRPC on grpc_port as well as HTTP")
    models_dir: Path = Field(REPO_MODELS_DIR, description="model repository: <name>/<version>/model.onnx")
    model_name: str | None = Field(
        None, description="serve models_dir as this one model (<version>/model.onnx, or a bare model.onnx as "
                          "version 1), as KServe lays out /mnt/models; also the default model")
    device: Literal["auto", "cuda", "cpu"] = Field(
        "auto", description="execution provider: cuda refuses to start without a working GPU; auto takes it when it loads")
    default_model: str = Field("cnn-pytorch", description="the model behind /v1/predict, /v1/activations, /v1/explain")
    threads: int = Field(0, ge=0, description="ONNX Runtime intra-op threads per session; 0 = the usable CPUs / workers")
    ort_spinning: bool = Field(False, description="let ONNX Runtime's idle threads spin (lower latency, more CPU)")
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="log level")
    log_format: Literal["json", "text"] = Field("json", description="json: one object per line with the request id")
    access_log: bool = Field(False, description="log every request; 4xx and 5xx answers are always logged")
    workers: int = Field(1, ge=1, le=64, description="server processes sharing the port, each with its own sessions")
    served_by: bool = Field(False, description="answer with an X-Served-By header naming this host (replicas behind a balancer)")

    # dynamic batching (per model version)
    max_batch_size: int = Field(64, ge=1, le=4096, description="images per ONNX Runtime run")
    max_queue_delay_ms: float = Field(0.0, ge=0, le=1000, description="wait for a fuller batch, at most this long")
    max_queue_size: int = Field(256, ge=1, description="requests waiting per model version before 503")
    instances: int = Field(1, ge=1, le=16, description="batches of one model version computed at once")
    request_timeout_s: float = Field(10.0, gt=0, description="queue wait after which a request gets 503")
    max_queue_images: int = Field(4096, ge=1, description="images admitted per model version and not yet computed "
                                  "(a request's cost: its batch, explain's patch positions) before 503")
    release_memory_after_idle_s: float = Field(1.0, ge=0, description="a model version idle this long gives ONNX "
                                               "Runtime's unused arena memory back (0: keep it)")

    # the cost of one request, and of all requests in progress together
    max_compute_images: int = Field(1024, ge=1, description="images the model computes for one request (explain: "
                                    "1 + patch positions); over it 413")
    max_response_bytes: int = Field(32 * 1024 * 1024, ge=65536, description="one response's size, estimated before "
                                    "any work (V2 outputs, activations); over it 413")
    max_request_pixels: int = Field(32_000_000, ge=784, description="decoded width x height of all the image files "
                                    "of one request, read from their headers; over it 413")
    max_pending_response_bytes: int = Field(64 * 1024 * 1024, ge=65536, description="estimated response bytes of "
                                            "all requests in progress together before 503")
    max_pending_body_bytes: int = Field(32 * 1024 * 1024, ge=1024, description="request body bytes held by all "
                                        "requests in progress together before 503")

    # connections
    max_connections: int = Field(1000, ge=1, description="open connections; one more is answered 503 and closed")
    max_header_bytes: int = Field(32 * 1024, ge=1024, description="request line and headers; over it 431 and the "
                                  "connection is closed")
    header_timeout_s: float = Field(10.0, gt=0, description="time to send the request line and headers; then 408 "
                                    "and close (a connection that sent nothing is just closed)")
    body_timeout_s: float = Field(60.0, gt=0, description="time to send the request body once the headers are in; "
                                  "then 408 and close")
    keep_alive_timeout_s: float = Field(5.0, gt=0, description="an idle keep-alive connection is closed after this long")
    send_timeout_s: float = Field(30.0, gt=0, description="a client that reads nothing of its response for this "
                                  "long is disconnected")

    # input limits
    max_body_bytes: int = Field(8 * 1024 * 1024, ge=1024, description="request body, after decompression")
    max_images_per_request: int = Field(256, ge=1, description="images in one request")
    max_encoded_image_bytes: int = Field(4 * 1024 * 1024, ge=64, description="one encoded image file")
    max_image_pixels: int = Field(16_000_000, ge=784, description="decoded width x height (decompression bombs)")
    max_multipart_parts: int = Field(64, ge=1, description="parts of a multipart body")
    max_json_depth: int = Field(6, ge=3, description="JSON nesting (V2 adds the tensor's rank)")

    # admin, CORS, shutdown
    admin_enabled: bool = Field(False, description="serve the model repository API (hot reload) without a token")
    admin_token: str | None = Field(None, description="serve the model repository API to callers with this bearer token")
    cors_origins: list[str] = Field(default_factory=list, description="origins allowed by CORS (JSON list or commas)")
    shutdown_grace_s: float = Field(30.0, ge=0, description="on SIGTERM, time to finish queued and running requests")
    drain_delay_s: float = Field(0.0, ge=0, le=60, description="on SIGTERM, keep serving this long while /readyz says "
                                 "not ready, so that a load balancer's health check takes the server out first "
                                 "(counted within shutdown_grace_s)")

    @model_validator(mode="after")
    def _single_model_is_the_default(self) -> "Settings":
        if self.model_name and "default_model" not in self.model_fields_set:
            self.default_model = self.model_name
        return self

    @field_validator("models_dir")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return value.expanduser()

    @property
    def admin_allowed(self) -> bool:
        """Admin routes exist when enabled explicitly or when a token is configured."""
        return self.admin_enabled or bool(self.admin_token)

    @property
    def intra_op_threads(self) -> int:
        return self.threads or max(1, available_cpus() // self.workers)
