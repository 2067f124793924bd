"""The load tests: hot reload while clients hammer the service, then SIGTERM under load; and
load shedding with a tiny queue.

Every answer is checked against what the model files themselves predict offline (ONNX
Runtime in this process), per version: version 2 is a copy of the model with its last layer
rolled by one class, so an answer computed by the wrong version, or mixed up with another
request's, cannot pass.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.conftest import ServerProcess
from tests.service.hammer import Hammer, Outcome, ReadinessPoller
from tests.service.servers import (
    MODEL_NAME,
    SOURCE_MODEL,
    offline_probabilities,
    place_model,
    start_private_server,
    write_shifted_model,
)

ADMIN_TOKEN = "reload-token"
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
LOAD = f"/v2/repository/models/{MODEL_NAME}/load"
DIGITS = 64
PHASE_REQUESTS, PHASE_SECONDS = 40, 1.0  # load between two changes, at least
CLEAR_MARGIN = 0.05  # images whose top two probabilities are this far apart: batching noise cannot flip them


@dataclass(frozen=True)
class Digits:
    images: np.ndarray  # uint8 [n, 28, 28]
    truth: np.ndarray  # MNIST labels
    original: np.ndarray  # labels SOURCE_MODEL predicts offline
    shifted: np.ndarray  # labels the shifted copy predicts offline


@pytest.fixture(scope="module")
def shifted_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_shifted_model(SOURCE_MODEL, tmp_path_factory.mktemp("shifted") / "model.onnx")


@pytest.fixture(scope="module")
def digits(mnist_test_set: tuple[np.ndarray, np.ndarray], shifted_model: Path) -> Digits:
    images, labels = mnist_test_set[0][:2000], mnist_test_set[1][:2000]
    probabilities = offline_probabilities(SOURCE_MODEL, images)
    ranked = np.sort(probabilities, axis=1)
    clear = np.nonzero(ranked[:, -1] - ranked[:, -2] > CLEAR_MARGIN)[0][:DIGITS]
    assert len(clear) == DIGITS
    original = probabilities[clear].argmax(axis=1)
    shifted = offline_probabilities(shifted_model, images[clear]).argmax(axis=1)
    assert (shifted == (original + 1) % 10).all()
    assert (original == labels[clear]).mean() >= 0.95  # a good model: it agrees with MNIST's labels
    return Digits(images=images[clear], truth=labels[clear], original=original, shifted=shifted)


def wait_for_log(server: ServerProcess, text: str, occurrences: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while server.log().count(text) < occurrences:
        assert time.monotonic() < deadline, f"{text!r} not logged {occurrences} times:\n{server.log()[-3000:]}"
        assert server.process.poll() is None, server.log()[-3000:]
        time.sleep(0.05)


def access_entries(server: ServerProcess) -> list[dict]:
    return [entry for entry in (json.loads(line) for line in server.log().splitlines() if line.startswith("{"))
            if entry.get("logger") == "mnist_serve.access"]


def assert_clean_503(outcome: Outcome) -> None:
    assert outcome.status == 503, outcome
    assert outcome.retry_after and int(outcome.retry_after) >= 1, outcome
    assert outcome.error, outcome


@dataclass(frozen=True)
class Timeline:
    """When version 2 held which file (test clock)."""

    v2_loaded: float  # the load call returned: version 2 is the latest from here on
    sighup_sent: float  # version 2's file was replaced with the original, SIGHUP sent
    swap_seen: float  # the reload was logged: version 2 now computes with the original
    sigterm_sent: float


def valid_labels(outcome: Outcome, digits: Digits, timeline: Timeline) -> list[list[int]]:
    """The answers this request may correctly get, given the version that answered it."""
    original = digits.original[outcome.images].tolist()
    shifted = digits.shifted[outcome.images].tolist()
    if outcome.version == 1:
        return [original]
    assert outcome.version == 2, f"version {outcome.version} answered: {outcome}"
    if outcome.finished < timeline.sighup_sent:
        return [shifted]
    if outcome.started > timeline.swap_seen:
        return [original]
    return [shifted, original]


def test_hot_reload_under_load_then_sigterm(tmp_path: Path, digits: Digits, shifted_model: Path) -> None:
    models_dir = tmp_path / "models"
    server = start_private_server(tmp_path, {"MNIST_SERVE_ADMIN_TOKEN": ADMIN_TOKEN, "MNIST_SERVE_MAX_QUEUE_SIZE": "4"})
    hammer = Hammer(server.url, digits.images, clients=4)
    readiness = ReadinessPoller(server.url)
    hammer.start()
    readiness.start()
    try:
        with httpx.Client(base_url=server.url, timeout=60, headers=AUTH) as admin:
            hammer.wait_for(PHASE_REQUESTS, PHASE_SECONDS)

            # a new version dropped in, picked up by the admin call
            place_model(models_dir, 2, shifted_model)
            loaded = admin.post(LOAD)
            v2_loaded = time.monotonic()
            assert loaded.status_code == 200, loaded.text
            assert loaded.json()["versions"] == [1, 2]
            info = admin.get(f"/v1/models/{MODEL_NAME}").json()
            assert (info["version"], info["versions"]) == (2, [1, 2])
            hammer.wait_for(PHASE_REQUESTS, PHASE_SECONDS)

            # the old version removed from disk: the next load unloads it
            shutil.rmtree(models_dir / MODEL_NAME / "1")
            loaded = admin.post(LOAD)
            assert loaded.status_code == 200 and loaded.json()["versions"] == [2], loaded.text
            gone = admin.get(f"/v1/models/{MODEL_NAME}/versions/1")
            assert gone.status_code == 404 and "no version 1" in gone.json()["error"]
            hammer.wait_for(PHASE_REQUESTS, PHASE_SECONDS)

            # a broken version 3 (a half-copied file) is refused; version 2 keeps serving
            broken = models_dir / MODEL_NAME / "3" / "model.onnx"
            broken.parent.mkdir()
            broken.write_bytes(SOURCE_MODEL.read_bytes()[:100_000])
            refused = admin.post(LOAD)
            assert refused.status_code == 400, refused.text
            assert f"{MODEL_NAME}/3" in refused.json()["error"] and "keep serving" in refused.json()["error"]
            assert admin.get(f"/v1/models/{MODEL_NAME}").json()["version"] == 2
            states = {entry["version"]: entry for entry in admin.post("/v2/repository/index").json()}
            assert states["2"]["state"] == "READY"
            assert states["3"]["state"] == "UNAVAILABLE" and states["3"]["reason"]
            hammer.wait_for(PHASE_REQUESTS, PHASE_SECONDS)

            # version 2's file replaced in place, picked up on SIGHUP (version 3 is still broken)
            reloads = server.log().count(f"reload {MODEL_NAME}:")
            place_model(models_dir, 2, SOURCE_MODEL)
            sighup_sent = time.monotonic()
            server.process.send_signal(signal.SIGHUP)
            wait_for_log(server, f"reload {MODEL_NAME}:", reloads + 1)
            swap_seen = time.monotonic()
            assert admin.get(f"/v1/models/{MODEL_NAME}").json()["version"] == 2
            hammer.wait_for(PHASE_REQUESTS, PHASE_SECONDS)

        # SIGTERM while the clients keep going
        sigterm_sent = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        exit_code = server.process.wait(timeout=30)
        exit_seen = time.monotonic()
    finally:
        hammer.stop()
        readiness.stop()
        server.stop()
    timeline = Timeline(v2_loaded=v2_loaded, sighup_sent=sighup_sent, swap_seen=swap_seen, sigterm_sent=sigterm_sent)

    assert exit_code == 0, server.log()[-3000:]
    assert exit_seen - sigterm_sent < 15
    check_answers(hammer.outcomes, digits, timeline)
    check_shutdown(server, hammer.outcomes, timeline)
    check_readiness(readiness.samples, timeline)


def check_answers(outcomes: list[Outcome], digits: Digits, timeline: Timeline) -> None:
    """Before SIGTERM every request got the right answer from the version that said it answered,
    or a clean 503; nothing else."""
    before = [outcome for outcome in outcomes if outcome.finished < timeline.sigterm_sent]
    assert len(before) >= 5 * PHASE_REQUESTS
    statuses = Counter(outcome.status for outcome in before)
    assert set(statuses) <= {200, 503}, [outcome for outcome in before if outcome.status not in (200, 503)][:5]
    for outcome in before:
        if outcome.status == 503:
            assert_clean_503(outcome)
            continue
        assert outcome.labels in valid_labels(outcome, digits, timeline), outcome
        if outcome.started > timeline.v2_loaded:
            assert outcome.version == 2, f"version 1 answered after version 2 was loaded: {outcome}"
    answered = [outcome for outcome in before if outcome.status == 200]
    assert len(answered) >= 0.8 * len(before), statuses
    versions = Counter(outcome.version for outcome in answered)
    assert versions[1] >= 10 and versions[2] >= 30, versions
    after_swap = [outcome for outcome in answered if outcome.started > timeline.swap_seen]
    assert len(after_swap) >= 10


def check_shutdown(server: ServerProcess, outcomes: list[Outcome], timeline: Timeline) -> None:
    """Every request the server accepted was answered before it exited: a request without a
    response must be one the server never logged (its connection was refused or never read)."""
    log = server.log()
    assert "SIGTERM received: not ready, draining" in log
    assert "shutdown: every queued request answered" in log
    entries = access_entries(server)
    served = {entry["request_id"]: entry["status"] for entry in entries}
    late = [outcome for outcome in outcomes if outcome.finished >= timeline.sigterm_sent]
    for outcome in late:
        if outcome.status is None:
            assert outcome.request_id not in served, f"accepted, not answered: {outcome}, {served[outcome.request_id]}"
            assert outcome.error in ("ConnectError", "RemoteProtocolError", "ReadError"), outcome
        elif outcome.status == 503:
            assert_clean_503(outcome)
        else:
            assert outcome.status == 200, outcome
            assert served[outcome.request_id] == 200
    lines = log.splitlines()
    signal_line = next(index for index, line in enumerate(lines) if "SIGTERM received" in line)
    finished_after_signal = [line for line in lines[signal_line:] if '"status":200' in line and "hammer-" in line]
    assert finished_after_signal, "no request in flight at SIGTERM was answered after it"
    assert all(outcome.status is not None for outcome in outcomes if outcome.started < timeline.sigterm_sent - 1.0)


def check_readiness(samples: list[tuple[float, int | None]], timeline: Timeline) -> None:
    """Ready throughout the reloads (no downtime); after SIGTERM never ready again."""
    before = [status for at, status in samples if at < timeline.sigterm_sent]
    assert len(before) >= 100 and set(before) == {200}, Counter(before)
    after = [status for at, status in samples if at >= timeline.sigterm_sent]
    first_down = next((index for index, status in enumerate(after) if status != 200), len(after))
    assert first_down <= 1, after[:5]  # at most one answer that was already on its way
    assert 200 not in after[first_down:], after


def test_overload_sheds_load_with_503_and_stays_responsive(tmp_path: Path, digits: Digits) -> None:
    server = start_private_server(tmp_path, {"MNIST_SERVE_MAX_QUEUE_SIZE": "2"})
    flood_size, rounds = 24, 3
    body = {"images": np.tile(digits.images, (2, 1, 1)).tolist()}  # 128 images: a batch that takes a while
    expected = np.tile(digits.original, 2).tolist()
    statuses: list[int] = []
    failures: list[str] = []
    health_latencies: list[float] = []
    flooding = threading.Event()
    flooding.set()
    barrier = threading.Barrier(flood_size)

    def flood() -> None:
        with httpx.Client(base_url=server.url, timeout=60) as http:
            for _ in range(rounds):
                barrier.wait()
                response = http.post("/v1/predict", json=body)
                statuses.append(response.status_code)
                if response.status_code == 200:
                    if [p["label"] for p in response.json()["predictions"]] != expected:
                        failures.append("wrong answer")
                elif response.status_code == 503:
                    error = response.json()["error"]
                    if "max_queue_size" not in error or int(response.headers.get("retry-after", "0")) < 1:
                        failures.append(f"unclean 503: {response.headers} {error}")
                else:
                    failures.append(f"{response.status_code}: {response.text[:200]}")

    def check_health() -> None:
        with httpx.Client(base_url=server.url, timeout=10) as http:
            while flooding.is_set():
                started = time.monotonic()
                assert http.get("/healthz").status_code == 200
                health_latencies.append(time.monotonic() - started)
                time.sleep(0.02)

    threads = [threading.Thread(target=flood) for _ in range(flood_size)]
    health = threading.Thread(target=check_health)
    try:
        health.start()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=90)
        flooding.clear()
        health.join(timeout=15)
        assert not any(thread.is_alive() for thread in threads), "a flooding client hung"
        assert not failures, failures[:5]
        counts = Counter(statuses)
        assert len(statuses) == flood_size * rounds and set(counts) <= {200, 503}, counts
        assert counts[503] >= flood_size // 2, counts  # shed
        assert counts[200] >= rounds * 2, counts  # and served what fit
        assert len(health_latencies) >= 5 and max(health_latencies) < 1.0, sorted(health_latencies)[-5:]
        after = httpx.post(f"{server.url}/v1/predict", json={"images": digits.images[:4].tolist()}, timeout=30)
        assert after.status_code == 200
    finally:
        flooding.clear()
        assert server.stop() == 0


def test_a_request_still_uploading_during_a_reload_is_answered(tmp_path: Path, digits: Digits, shifted_model: Path) -> None:
    """The route resolves the model version before it reads the body. A slow upload that began
    before version 1's file was replaced ends after the old session was retired; it must still
    get a correct answer, not an error."""
    models_dir = tmp_path / "models"
    server = start_private_server(tmp_path, {"MNIST_SERVE_ADMIN_TOKEN": ADMIN_TOKEN})
    try:
        body = json.dumps({"images": digits.images[:8].tolist()}).encode()
        host, port = server.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=30) as sock:
            sock.sendall(f"POST /v1/models/{MODEL_NAME}/versions/1/predict HTTP/1.1\r\nHost: test\r\n"
                         f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body[:1000])
            time.sleep(0.3)  # the route has resolved version 1 and waits for the rest of the body
            place_model(models_dir, 1, shifted_model)
            reloaded = httpx.post(f"{server.url}{LOAD}", headers=AUTH, timeout=60)
            assert reloaded.status_code == 200, reloaded.text
            time.sleep(0.3)  # the old session's batcher has drained and closed
            sock.sendall(body[1000:])
            response = sock.makefile("rb").read()
        head, _, payload = response.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), response[:500]
        labels = [prediction["label"] for prediction in json.loads(payload)["predictions"]]
        assert labels in (digits.original[:8].tolist(), digits.shifted[:8].tolist())
    finally:
        assert server.stop() == 0


def test_drain_delay_keeps_serving_while_not_ready_then_exits_0(tmp_path: Path) -> None:
    """drain_delay_s: after SIGTERM /readyz is 503 at once while requests, on new connections too,
    are still answered (a load balancer's health check takes the server out meanwhile); then the
    server stops and exits 0. A second SIGTERM during the delay cuts it short."""
    delay = 3.0
    server = start_private_server(tmp_path, {"MNIST_SERVE_DRAIN_DELAY_S": str(delay)})
    image = {"image": np.zeros((28, 28)).tolist()}
    sent = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    with httpx.Client(base_url=server.url, timeout=10) as client:
        deadline = time.monotonic() + 1.0
        while client.get("/readyz").status_code != 503:
            assert time.monotonic() < deadline, "still ready after SIGTERM"
        assert client.post("/v1/predict", json=image).status_code == 200
    with httpx.Client(base_url=server.url, timeout=10) as fresh:
        assert time.monotonic() - sent < delay - 1.0
        assert fresh.post("/v1/predict", json=image).status_code == 200
    assert server.process.wait(timeout=delay + 20) == 0
    assert time.monotonic() - sent >= delay
    assert f"SIGTERM received: not ready, draining (delay {delay:g}s" in server.log()

    second = start_private_server(tmp_path / "second", {"MNIST_SERVE_DRAIN_DELAY_S": "30"})
    second.process.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    second.process.send_signal(signal.SIGTERM)
    assert second.process.wait(timeout=10) == 0
