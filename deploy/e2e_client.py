"""The HTTP side of deploy/e2e: requests to the published ports (127.0.0.1 only) and their checks.

Each subcommand prints what it saw and exits 1 with the reason when a check fails. It needs the
project's dev extra (httpx, tritonclient[http], numpy).

    python deploy/e2e_client.py predict-png --url http://127.0.0.1:8000 --image docs/examples/three.png --expect 3
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np
import tritonclient.http as triton
import tritonclient.utils as triton_utils

TIMEOUT_S = 30.0
SIGNAL_TAKES_EFFECT_S = 0.1  # a replica acts on SIGTERM at its event loop's next turn
# One client for every request (its TLS set-up is costly even for plain HTTP), but a new connection
# for each request, so that a stop or a drain meets fresh connections as a new client's would.
HTTP = httpx.Client(timeout=TIMEOUT_S, limits=httpx.Limits(max_keepalive_connections=0))


class CheckFailed(Exception):
    """What the e2e step expected and what it got."""


def model_path(model: str | None, version: int | None) -> str:
    if model is None:
        return "/v1"
    return f"/v1/models/{model}" + (f"/versions/{version}" if version is not None else "")


def predict_png(url: str, image: Path, model: str | None = None, version: int | None = None) -> dict:
    """V1 predict of one image file, with the 28x28 input the model saw."""
    response = HTTP.post(f"{url}{model_path(model, version)}/predict", params={"include_input": "true"},
                          files={"file": (image.name, image.read_bytes(), "image/png")})
    if response.status_code != 200:
        raise CheckFailed(f"predict {image.name}: HTTP {response.status_code} {response.text[:300]}")
    return response.json()


def cmd_predict_png(args: argparse.Namespace) -> None:
    body = predict_png(args.url, args.image, args.model, args.version)
    prediction = body["predictions"][0]
    print(f"predict {args.image.name} -> {body['model']} v{body['version']}: label {prediction['label']} "
          f"(confidence {prediction['confidence']:.4f})")
    if args.expect is not None and prediction["label"] != args.expect:
        raise CheckFailed(f"expected label {args.expect}, got {prediction['label']}")
    if args.version is not None and body["version"] != args.version:
        raise CheckFailed(f"expected version {args.version} to answer, got {body['version']}")


def cmd_v2_binary(args: argparse.Namespace) -> None:
    """The same image through the Open Inference Protocol with Triton's binary tensors (tritonclient)."""
    v1 = predict_png(args.url, args.image, args.model)
    pixels = np.asarray(v1["inputs"][0], dtype=np.float32).reshape(1, 1, 28, 28)
    client = triton.InferenceServerClient(urlsplit(args.url).netloc, network_timeout=TIMEOUT_S)
    image = triton.InferInput("image", list(pixels.shape), "FP32")
    image.set_data_from_numpy(pixels, binary_data=True)
    result = client.infer(args.model, [image], outputs=[triton.InferRequestedOutput("probabilities", binary_data=True)])
    probabilities = result.as_numpy("probabilities")
    label = int(np.argmax(probabilities[0]))
    difference = float(np.max(np.abs(probabilities[0] - np.asarray(v1["predictions"][0]["probabilities"]))))
    print(f"V2 binary infer {args.model}: label {label}, probabilities within {difference:.1e} of V1's")
    if label != args.expect:
        raise CheckFailed(f"V2 binary infer: expected label {args.expect}, got {label}")
    if difference > 1e-3:
        raise CheckFailed(f"V2 and V1 probabilities differ by {difference} for the same input")


def cmd_grpc(args: argparse.Namespace) -> None:
    """The same image over gRPC (tritonclient.grpc), to the server or through the balancer."""
    import tritonclient.grpc as triton_grpc

    v1 = predict_png(args.url, args.image, args.model)
    pixels = np.asarray(v1["inputs"][0], dtype=np.float32).reshape(1, 1, 28, 28)
    client = triton_grpc.InferenceServerClient(args.grpc)
    image = triton_grpc.InferInput("image", list(pixels.shape), "FP32")
    image.set_data_from_numpy(pixels)
    labels = []
    for _ in range(args.requests):
        result = client.infer(args.model, [image], outputs=[triton_grpc.InferRequestedOutput("probabilities")],
                              client_timeout=TIMEOUT_S)
        labels.append(int(np.argmax(result.as_numpy("probabilities")[0])))
    print(f"gRPC infer {args.model} on {args.grpc}: labels {sorted(set(labels))} in {len(labels)} answers")
    if set(labels) != {args.expect}:
        raise CheckFailed(f"gRPC infer: expected label {args.expect}, got {labels}")


def cmd_wait_version(args: argparse.Namespace) -> None:
    """Poll the model's description until the version is served (after a SIGHUP reload), or with
    --absent check that it is not served yet."""
    if args.absent:
        versions = HTTP.get(f"{args.url}/v1/models/{args.model}").raise_for_status().json()["versions"]
        if args.version in versions:
            raise CheckFailed(f"{args.model} version {args.version} is served already (versions {versions})")
        print(f"{args.model}: versions {versions}, not yet {args.version}")
        return
    deadline = time.monotonic() + args.timeout
    versions: list[int] = []
    while time.monotonic() < deadline:
        response = HTTP.get(f"{args.url}/v1/models/{args.model}")
        if response.status_code == 200:
            versions = response.json()["versions"]
            if args.version in versions:
                print(f"{args.model}: versions {versions} served")
                return
        time.sleep(0.5)
    raise CheckFailed(f"{args.model} version {args.version} not served after {args.timeout}s (versions {versions})")


def served_by(url: str, image: bytes) -> str:
    response = HTTP.post(f"{url}/v1/predict", files={"file": ("digit.png", image, "image/png")})
    if response.status_code != 200:
        raise CheckFailed(f"through the balancer: HTTP {response.status_code} {response.text[:300]}")
    return response.headers.get("x-served-by", "")


def cmd_spread(args: argparse.Namespace) -> None:
    """Requests through the balancer until every replica has answered (health checks settle first)."""
    expected = set(args.replicas.split(","))
    image = args.image.read_bytes()
    seen: Counter[str] = Counter()
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        seen.update(served_by(args.url, image) for _ in range(len(expected) * 4))
        if expected <= set(seen):
            break
        time.sleep(0.5)
    print(f"served through the balancer by {dict(seen)}")
    if set(seen) - expected:
        raise CheckFailed(f"answers from {sorted(set(seen) - expected)}, not one of the replicas {sorted(expected)}")
    if not expected <= set(seen):
        raise CheckFailed(f"replicas {sorted(expected - set(seen))} never answered within {args.timeout}s")


@dataclass
class Outcome:
    started: float
    ended: float
    status: int | None  # None: no answer
    served_by: str
    error: str


NOT_ACCEPTED = ("connection refused", "closed before answering", "connection reset")


def unanswered(exc: httpx.TransportError) -> str:
    """Why a request got no answer: one of NOT_ACCEPTED (the server never took it; behind Docker's
    port proxy a closed port looks like a connection that closes at once), or what else happened."""
    if isinstance(exc, httpx.ConnectError) and "refused" in str(exc).lower():
        return "connection refused"
    if isinstance(exc, httpx.RemoteProtocolError) and "without sending a response" in str(exc):
        return "closed before answering"
    if isinstance(exc, httpx.ReadError) and "reset" in str(exc).lower():
        return "connection reset"
    return f"{type(exc).__name__}: {exc}"


def load(url: str, image: bytes, requests: int, concurrency: int, path: str,
         interrupt_after: int, interrupt: Callable[[], None]) -> tuple[list[Outcome], float, float]:
    """`requests` uploads, `concurrency` at a time, each on its own connection; after
    `interrupt_after` answers, `interrupt()` runs once (a stop, a SIGTERM). Returns the outcomes and
    when the interruption began and ended."""
    answered = threading.Event()
    done = Counter[str]()
    lock = threading.Lock()
    times = [float("inf"), float("inf")]
    failures: list[BaseException] = []

    def one(_: int) -> Outcome:
        started = time.monotonic()
        try:
            response = HTTP.post(f"{url}{path}", files={"file": ("digit.png", image, "image/png")})
            outcome = Outcome(started, time.monotonic(), response.status_code, response.headers.get("x-served-by", ""),
                              "" if response.status_code == 200 else response.text[:200])
        except httpx.TransportError as exc:
            outcome = Outcome(started, time.monotonic(), None, "", unanswered(exc))
        with lock:
            done["answered"] += 1
            if done["answered"] >= interrupt_after:
                answered.set()
        return outcome

    def interrupter() -> None:
        answered.wait()
        times[0] = time.monotonic()
        try:
            interrupt()
        except BaseException as exc:  # reported by the caller's thread
            failures.append(exc)
        times[1] = time.monotonic()

    thread = threading.Thread(target=interrupter, daemon=True)
    thread.start()
    with ThreadPoolExecutor(concurrency) as pool:
        outcomes = list(pool.map(one, range(requests)))
    answered.set()
    thread.join()
    if failures:
        raise CheckFailed(f"the interruption failed: {failures[0]}")
    return outcomes, times[0], times[1]


def run_command(command: list[str]) -> Callable[[], None]:
    def run() -> None:
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise CheckFailed(f"{' '.join(command)} failed: {result.stderr.strip()}")
    return run


def cmd_stop_under_load(args: argparse.Namespace) -> None:
    """`docker compose stop` while requests run: every request sent before it is answered 200; those
    sent after are answered (200, or 503 while shutting down) or never accepted (connection refused
    or closed before any byte), never cut off or answered with anything else."""
    outcomes, stop_began, stop_ended = load(args.url, args.image.read_bytes(), args.requests, args.concurrency,
                                            "/v1/predict", args.interrupt_after, run_command(args.command))
    before = [o for o in outcomes if o.started < stop_began]
    in_flight = [o for o in before if o.ended > stop_began]
    after = [o for o in outcomes if o.started >= stop_began]
    statuses = Counter(str(o.status or o.error) for o in outcomes)
    print(f"{len(outcomes)} requests, stop began after {len(outcomes) - len(after) - len(in_flight)} answers and took "
          f"{stop_ended - stop_began:.1f}s: {len(in_flight)} in flight when it began; outcomes {dict(statuses)}")
    failed_before = [o for o in before if o.status != 200]
    if failed_before:
        raise CheckFailed(f"{len(failed_before)} requests sent before the stop were not answered 200: "
                          f"{[o.status or o.error for o in failed_before[:5]]}")
    wrong_after = [o for o in after if o.status not in (200, 503, None) or (o.status is None and o.error not in NOT_ACCEPTED)]
    if wrong_after:
        raise CheckFailed(f"requests sent during the stop got {[o.status or o.error for o in wrong_after[:5]]}")
    if not in_flight:
        raise CheckFailed("no request was in flight when the stop began: the check proved nothing, raise the load")


def cmd_drain(args: argparse.Namespace) -> None:
    """SIGTERM one replica while requests run through the balancer: every request is answered 200,
    and none sent after the signal and its drain delay is answered by the draining replica."""
    outcomes, signal_sent, signal_returned = load(
        args.url, args.image.read_bytes(), args.requests, args.concurrency, "/v1/predict", args.interrupt_after,
        run_command(["docker", "kill", "--signal", "SIGTERM", args.container]))
    failed = [o for o in outcomes if o.status != 200]
    # `docker kill` returns once the signal is sent; the replica's event loop acts on it at its next
    # turn, and a request already read from a kept-alive connection by then is still answered.
    taken_out = signal_returned + args.drain_delay + SIGNAL_TAKES_EFFECT_S
    late = [o for o in outcomes if o.started > taken_out and o.served_by == args.replica]
    spread = Counter(o.served_by for o in outcomes)
    print(f"{len(outcomes)} requests through the balancer while replica {args.replica} drained: "
          f"{len(outcomes) - len(failed)} answered 200, by {dict(spread)}; "
          f"{sum(o.started > signal_returned for o in outcomes)} sent after the SIGTERM, "
          f"{sum(o.started > taken_out for o in outcomes)} after its drain delay")
    if failed:
        raise CheckFailed(f"{len(failed)} requests failed while a replica drained: {[o.status or o.error for o in failed[:5]]}")
    if late:
        raise CheckFailed(f"the draining replica answered {len(late)} requests sent more than "
                          f"{args.drain_delay + SIGNAL_TAKES_EFFECT_S:g} s after its SIGTERM")
    if not any(o.started > taken_out for o in outcomes):
        raise CheckFailed("no request was sent after the SIGTERM and its drain delay: the check proved nothing, "
                          "raise the load")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command_name", required=True)

    def add(name: str, handler: Callable[[argparse.Namespace], None]) -> argparse.ArgumentParser:
        command = sub.add_parser(name)
        command.add_argument("--url", required=True, help="http://127.0.0.1:<published port>")
        command.add_argument("--image", type=Path, default=Path("docs/examples/three.png"))
        command.set_defaults(handler=handler)
        return command

    command = add("predict-png", cmd_predict_png)
    command.add_argument("--model")
    command.add_argument("--version", type=int)
    command.add_argument("--expect", type=int)
    command = add("v2-binary", cmd_v2_binary)
    command.add_argument("--model", default="cnn-pytorch")
    command.add_argument("--expect", type=int, required=True)
    command = add("grpc", cmd_grpc)
    command.add_argument("--grpc", required=True, help="127.0.0.1:<published gRPC port>")
    command.add_argument("--model", default="cnn-pytorch")
    command.add_argument("--expect", type=int, required=True)
    command.add_argument("--requests", type=int, default=1)
    command = add("wait-version", cmd_wait_version)
    command.add_argument("--model", required=True)
    command.add_argument("--version", type=int, required=True)
    command.add_argument("--timeout", type=float, default=30.0)
    command.add_argument("--absent", action="store_true", help="check that the version is not served yet")
    command = add("spread", cmd_spread)
    command.add_argument("--replicas", required=True, help="the replicas' hostnames, comma-separated")
    command.add_argument("--timeout", type=float, default=60.0)
    for name, handler in (("stop-under-load", cmd_stop_under_load), ("drain", cmd_drain)):
        command = add(name, handler)
        command.add_argument("--requests", type=int, default=200)
        command.add_argument("--concurrency", type=int, default=8)
        command.add_argument("--interrupt-after", type=int, default=40, help="answers before the interruption")
    sub.choices["stop-under-load"].add_argument("command", nargs="+", help="the stop command")
    sub.choices["drain"].add_argument("--container", required=True, help="the replica's container id")
    sub.choices["drain"].add_argument("--replica", required=True, help="the replica's hostname")
    sub.choices["drain"].add_argument("--drain-delay", type=float, default=0.0,
                                      help="the replica's drain_delay_s: it serves that long after the signal")

    args = parser.parse_args(argv)
    try:
        args.handler(args)
    except (CheckFailed, httpx.HTTPError, triton_utils.InferenceServerException, KeyError, ValueError) as exc:
        print(f"check failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
