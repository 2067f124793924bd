"""gRPC load for the benchmark: ModelInfer calls in a closed loop from a separate process, as wrk
does for HTTP. The child sends one prebuilt, already serialized ModelInferRequest (raw input
contents, as tritonclient sends them) on `concurrency` concurrent calls over `connections` HTTP/2
connections for `duration` seconds (answers after that are not counted, as with wrk), and prints
one summary line with the same keys as bench/post.lua's (`GRPC_JSON {...}`), plus the count of
each gRPC status. Its CPU seconds come from getrusage(RUSAGE_CHILDREN), as for wrk.

    from bench.grpc_load import infer_request, run_load
    body = infer_request(images, "cnn-pytorch")            # float32 [n, 1, 28, 28] in [0, 1]
    result = run_load("127.0.0.1:8001", body, concurrency=64, duration=5)
    result.requests_per_s, result.latency_ms["p99"], result.status_codes

    python -m bench.grpc_load 127.0.0.1:8001 --model cnn-pytorch --images 1 -c 64 -d 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np

from service.grpc.generated import grpc_service_pb2 as pb

MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"
CALL_TIMEOUT_S = 60.0  # as wrk's --timeout in bench/load.py: a 256-image call queued behind 63 others takes seconds
SUMMARY_MARKER = "GRPC_JSON"
REPO_ROOT = Path(__file__).resolve().parent.parent
CHANNEL_OPTIONS = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1),
                   # one connection per channel: channels with the same options would otherwise share one
                   ("grpc.use_local_subchannel_pool", 1)]


@dataclass(frozen=True)
class GrpcLoadResult:
    tool: str
    duration_s: float
    requests: int  # answers received, whatever their status
    status_errors: int  # answers with a status other than OK
    socket_errors: int  # always 0: a broken connection shows as UNAVAILABLE in status_codes
    latency_ms: dict[str, float]  # mean, max, p50, p95, p99 over every answer
    client_cpu_s: float
    status_codes: dict[str, int] = field(default_factory=dict)  # gRPC status name -> answers

    @property
    def errors(self) -> int:
        return self.status_errors + self.socket_errors

    @property
    def ok_requests(self) -> int:
        return self.requests - self.status_errors

    @property
    def requests_per_s(self) -> float:
        return self.ok_requests / self.duration_s if self.duration_s else 0.0


def infer_request(images: np.ndarray, model: str, outputs: Sequence[str] = ("probabilities",)) -> bytes:
    """A serialized ModelInferRequest: `images` float32 [n, 1, 28, 28] as raw input contents."""
    batch = np.ascontiguousarray(images, dtype="<f4")
    message = pb.ModelInferRequest(model_name=model, raw_input_contents=[batch.tobytes()])
    message.inputs.add(name="image", datatype="FP32", shape=list(batch.shape))
    for name in outputs:
        message.outputs.add(name=name)
    return message.SerializeToString()


def decode_output(response: bytes, name: str = "probabilities") -> np.ndarray:
    """An output of a serialized ModelInferResponse, raw or typed, as float32 in its shape."""
    message = pb.ModelInferResponse.FromString(response)
    for index, output in enumerate(message.outputs):
        if output.name == name:
            if message.raw_output_contents:
                data = np.frombuffer(message.raw_output_contents[index], dtype="<f4")
            else:
                data = np.asarray(output.contents.fp32_contents, dtype=np.float32)
            return data.reshape(list(output.shape))
    raise ValueError(f"the response has no output {name!r}")


def infer_once(target: str, request: bytes, timeout: float = CALL_TIMEOUT_S) -> bytes:
    """One call (the correctness check before any load): the serialized response."""
    with grpc.insecure_channel(target, options=CHANNEL_OPTIONS) as channel:
        return channel.unary_unary(MODEL_INFER)(request, timeout=timeout)


async def _caller(call: grpc.aio.UnaryUnaryMultiCallable, request: bytes, latencies: list[float],
                  codes: Counter) -> None:
    while True:
        started = time.perf_counter()
        try:
            await call(request, timeout=CALL_TIMEOUT_S)
            codes["OK"] += 1
        except grpc.aio.AioRpcError as error:
            codes[error.code().name] += 1
        latencies.append(time.perf_counter() - started)


async def drive(target: str, request: bytes, concurrency: int, duration: float, connections: int = 1) -> dict:
    """The closed loop itself (in this process); the summary wrk's script prints, as a dict."""
    channels = [grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS) for _ in range(max(1, connections))]
    try:
        for channel in channels:
            await asyncio.wait_for(channel.channel_ready(), 10)
        calls = [channel.unary_unary(MODEL_INFER) for channel in channels]
        latencies: list[float] = []
        codes: Counter = Counter()
        started = time.perf_counter()
        callers = [asyncio.ensure_future(_caller(calls[index % len(calls)], request, latencies, codes))
                   for index in range(concurrency)]
        # As wrk: the answers that arrive within `duration` count; the calls still in flight are dropped.
        await asyncio.sleep(duration)
        elapsed = time.perf_counter() - started
        for caller in callers:
            caller.cancel()
        await asyncio.gather(*callers, return_exceptions=True)
    finally:
        for channel in channels:
            await channel.close()
    samples_us = np.asarray(latencies or [0.0]) * 1e6
    p50, p95, p99 = np.percentile(samples_us, [50, 95, 99])
    total = sum(codes.values())
    return {
        "duration_us": int(elapsed * 1e6), "requests": total, "status_errors": total - codes["OK"],
        "connect_errors": 0, "read_errors": 0, "write_errors": 0, "timeouts": codes["DEADLINE_EXCEEDED"],
        "latency_us": {"mean": float(samples_us.mean()), "max": float(samples_us.max()), "p50": float(p50),
                       "p95": float(p95), "p99": float(p99)},
        "status_codes": dict(codes),
    }


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def command(target: str, body_file: Path, concurrency: int, duration: float, connections: int = 1) -> list[str]:
    return [sys.executable, "-m", "bench.grpc_load", target, "--body", str(body_file), "-c", str(concurrency),
            "-d", str(duration), "--connections", str(connections)]


def run_load(target: str, request: bytes, concurrency: int, duration: float, connections: int = 1,
             body_file: Path | None = None) -> GrpcLoadResult:
    """Drive `request` (from infer_request) at `target` ("host:port") with `concurrency` calls in
    flight for `duration` seconds, from a child process; `body_file` keeps the request on disk."""
    with tempfile.TemporaryDirectory() as scratch:
        path = body_file or Path(scratch) / "request.bin"
        path.write_bytes(request)
        argv = command(target, path, concurrency, duration, connections)
        cpu_before = _children_cpu_s()
        completed = subprocess.run(argv, capture_output=True, text=True, cwd=REPO_ROOT, timeout=duration + 120)
        client_cpu_s = _children_cpu_s() - cpu_before
    if completed.returncode != 0:
        raise RuntimeError(f"bench.grpc_load exited with {completed.returncode}:\n{completed.stdout}{completed.stderr}")
    summary = parse_summary(completed.stdout)
    return GrpcLoadResult(tool="grpc", duration_s=summary["duration_us"] / 1e6, requests=int(summary["requests"]),
                          status_errors=int(summary["status_errors"]), socket_errors=0,
                          latency_ms={key: float(value) / 1000 for key, value in summary["latency_us"].items()},
                          client_cpu_s=client_cpu_s, status_codes=summary["status_codes"])


def parse_summary(output: str) -> dict:
    for line in output.splitlines():
        marker, _, document = line.partition(" ")
        if marker == SUMMARY_MARKER:
            return json.loads(document)
    raise RuntimeError(f"bench.grpc_load printed no summary:\n{output}")


def _mnist_images(count: int, data_dir: str | None) -> np.ndarray:
    from training.data import load_split

    images = load_split("test", data_dir).images[:count]
    return (images.astype(np.float32) / 255.0).reshape(-1, 1, 28, 28)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.grpc_load", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("target", help="host:port of the gRPC server")
    parser.add_argument("--body", type=Path, help="a serialized ModelInferRequest (else built from --model/--images)")
    parser.add_argument("--model", default="cnn-pytorch")
    parser.add_argument("--images", type=int, default=1, help="MNIST test digits per request")
    parser.add_argument("--mnist-dir", default=None, help="MNIST files (default: MNIST_DIR or data/mnist)")
    parser.add_argument("-c", "--concurrency", type=int, default=1)
    parser.add_argument("-d", "--duration", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=1, help="HTTP/2 connections the calls are spread over")
    args = parser.parse_args(argv)
    request = args.body.read_bytes() if args.body else infer_request(_mnist_images(args.images, args.mnist_dir),
                                                                     args.model)
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    summary = runner(drive(args.target, request, args.concurrency, args.duration, args.connections))
    print(SUMMARY_MARKER, json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
