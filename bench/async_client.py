"""The fallback load generator, for machines without wrk: keep-alive HTTP/1.1 on asyncio.

Each of `--concurrency` connections POSTs the same prebuilt request in a closed loop
for `--duration` seconds; one JSON line with the same keys as bench/post.lua's
summary is printed at the end. It runs in its own process, so its CPU is measured
like wrk's.

    python -m bench.async_client http://127.0.0.1:8000/v1/predict body.json application/json -c 16 -d 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

HEADER_END = b"\r\n\r\n"


def build_request(url: str, body: bytes, content_type: str, headers: list[tuple[str, str]]) -> bytes:
    parts = urlsplit(url)
    lines = [f"POST {parts.path or '/'} HTTP/1.1", f"Host: {parts.netloc}", f"Content-Type: {content_type}",
             f"Content-Length: {len(body)}", *(f"{name}: {value}" for name, value in headers)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def read_response(reader: asyncio.StreamReader) -> int:
    """Read one response (Content-Length or chunked body) and return its status code."""
    head = await reader.readuntil(HEADER_END)
    lines = head[: -len(HEADER_END)].split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length, chunked = 0, False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if chunked:
        while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
            await reader.readexactly(size + 2)
        await reader.readuntil(b"\r\n")  # the empty trailer
    elif length:
        await reader.readexactly(length)
    return status


async def _connection(host: str, port: int, request: bytes, latencies: list[float], counts: Counter) -> None:
    """One closed-loop connection; reconnects after a failure, as wrk does."""
    while True:
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError:
            counts["connect_errors"] += 1
            await asyncio.sleep(0.01)
            continue
        try:
            while True:
                started = time.perf_counter()
                writer.write(request)
                status = await read_response(reader)
                latencies.append(time.perf_counter() - started)
                counts["requests"] += 1
                if status >= 400:
                    counts["status_errors"] += 1
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            counts["read_errors"] += 1
        finally:
            writer.close()


async def run_load(url: str, request: bytes, concurrency: int, duration: float) -> dict[str, object]:
    parts = urlsplit(url)
    latencies: list[float] = []
    counts: Counter = Counter()
    started = time.perf_counter()
    tasks = [asyncio.create_task(_connection(parts.hostname or "127.0.0.1", parts.port or 80, request, latencies,
                                             counts)) for _ in range(concurrency)]
    await asyncio.sleep(duration)
    elapsed = time.perf_counter() - started
    finished = counts["requests"]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    samples_us = np.asarray(latencies[:finished] or [0.0]) * 1e6
    p50, p95, p99 = np.percentile(samples_us, [50, 95, 99])
    return {
        "duration_us": int(elapsed * 1e6), "requests": finished, "status_errors": counts["status_errors"],
        "connect_errors": counts["connect_errors"], "read_errors": counts["read_errors"], "write_errors": 0,
        "timeouts": 0,
        "latency_us": {"mean": float(samples_us.mean()), "max": float(samples_us.max()), "p50": float(p50),
                       "p95": float(p95), "p99": float(p99)},
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.async_client", description=__doc__)
    parser.add_argument("url")
    parser.add_argument("body_file", type=Path)
    parser.add_argument("content_type")
    parser.add_argument("-c", "--concurrency", type=int, default=1)
    parser.add_argument("-d", "--duration", type=float, default=5.0)
    parser.add_argument("--header", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"))
    args = parser.parse_args(argv)
    request = build_request(args.url, args.body_file.read_bytes(), args.content_type,
                            [(name, value) for name, value in args.header])
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    summary = runner(run_load(args.url, request, args.concurrency, args.duration))
    print("CLIENT_JSON", json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
