"""The benchmark's points in one place: which requests each server is sent.

Every (server, request) pair below is measured at every concurrency of the run. To add a server
(a gRPC front end, an INT8 model) or a request, add its row here, its request to
`bench.payloads.all_workloads` and its start-up to `bench.run.BenchPlan.server_spec`.
"""

from __future__ import annotations

BATCH_REQUEST_IMAGES = 256

SERVICE_REQUESTS = ("v1-json", "v2-json", "v2-binary", f"v2-binary-{BATCH_REQUEST_IMAGES}")
# the Open Inference Protocol over gRPC (the service's own front end, on its grpc_port)
GRPC_REQUESTS = ("grpc", f"grpc-{BATCH_REQUEST_IMAGES}")
# the INT8 variant of the model (models/<model>-int8), when it is served: binary V2, one image and 256
INT8_REQUESTS = ("v2-binary-int8", f"v2-binary-{BATCH_REQUEST_IMAGES}-int8")

# server key -> the requests it is sent, in the order they are measured and shown
REQUESTS_BY_SERVER: dict[str, tuple[str, ...]] = {
    "naive": ("naive-json",),
    "batching-off": SERVICE_REQUESTS,
    "batching-on": SERVICE_REQUESTS + GRPC_REQUESTS + INT8_REQUESTS,
    # MLServer's REST front end has no binary tensor extension: its 256 images go as JSON
    "mlserver": ("v2-json", f"v2-json-{BATCH_REQUEST_IMAGES}"),
    "kserve": ("v2-json", "v2-binary", f"v2-binary-{BATCH_REQUEST_IMAGES}"),
    "triton": ("v2-json", "v2-binary", f"v2-binary-{BATCH_REQUEST_IMAGES}"),
}

SERVICE_SERVERS = ("naive", "batching-off", "batching-on")
ANCHORS = ("mlserver", "kserve", "triton")
ALL_REQUESTS = tuple(dict.fromkeys(name for names in REQUESTS_BY_SERVER.values() for name in names))


def requests_for(server: str, selected: tuple[str, ...] | None = None) -> tuple[str, ...]:
    """The server's requests, limited to `selected` when given; the naive server always keeps its only one."""
    names = REQUESTS_BY_SERVER[server]
    if selected is None or server == "naive":
        return names
    return tuple(name for name in names if name in selected)


def parse_anchors(value: str | None) -> tuple[str, ...]:
    """--anchors: absent (none), bare or "all" (every anchor), or a comma-separated list."""
    if not value:
        return ()
    if value == "all":
        return ANCHORS
    names = tuple(name.strip() for name in value.split(",") if name.strip())
    unknown = sorted(set(names) - set(ANCHORS))
    if unknown:
        raise ValueError(f"unknown anchor(s) {', '.join(unknown)}; choose from {', '.join(ANCHORS)}")
    return names
