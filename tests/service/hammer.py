"""Load for the reload and shutdown tests: client threads that post known MNIST images until
stopped and record every outcome, and a poller that records what /readyz says over time."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import httpx
import numpy as np

from tests.service.servers import MODEL_NAME

V1_PREDICT = "/v1/predict"  # the default model's latest version
V2_INFER = f"/v2/models/{MODEL_NAME}/infer"  # the latest version


@dataclass
class Outcome:
    request_id: str
    started: float
    finished: float
    images: list[int]  # indices into the image set
    status: int | None = None  # None: no HTTP response at all
    version: int | None = None
    labels: list[int] | None = None
    retry_after: str | None = None
    error: str = ""  # the {"error"} message, or the transport error's type


@dataclass
class Hammer:
    """`clients` threads, each on fresh connections (so that a refused connection means the
    server did not accept the request), alternating V1 JSON and V2 JSON requests of 1-4 images."""

    url: str
    images: np.ndarray  # uint8 [n, 28, 28]
    clients: int = 4
    outcomes: list[Outcome] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        for client in range(self.clients):
            thread = threading.Thread(target=self._run, args=(client,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)
        assert not any(thread.is_alive() for thread in self._threads), "a client hung"

    def count(self) -> int:
        return len(self.outcomes)

    def wait_for(self, more: int, at_least_s: float = 0.0, timeout: float = 30.0) -> None:
        """Block until `more` further requests have been answered and `at_least_s` has passed."""
        target = self.count() + more
        started = time.monotonic()
        while self.count() < target or time.monotonic() - started < at_least_s:
            assert time.monotonic() - started < timeout, f"only {self.count()} of {target} requests done"
            time.sleep(0.02)

    def _run(self, client: int) -> None:
        rng = np.random.default_rng(client)
        limits = httpx.Limits(max_keepalive_connections=0)
        with httpx.Client(base_url=self.url, timeout=30, limits=limits) as http:
            sequence = 0
            while not self._stop.is_set():
                sequence += 1
                chosen = rng.choice(len(self.images), size=int(rng.integers(1, 5)), replace=False).tolist()
                self.outcomes.append(self._one(http, f"hammer-{client}-{sequence}", chosen, use_v2=sequence % 2 == 0))

    def _one(self, http: httpx.Client, request_id: str, chosen: list[int], use_v2: bool) -> Outcome:
        pixels = self.images[chosen]
        headers = {"X-Request-ID": request_id}
        outcome = Outcome(request_id=request_id, started=time.monotonic(), finished=0.0, images=chosen)
        try:
            if use_v2:
                body = {"inputs": [{"name": "image", "datatype": "UINT8", "shape": [len(chosen), 1, 28, 28],
                                    "data": pixels.ravel().tolist()}], "outputs": [{"name": "probabilities"}]}
                response = http.post(V2_INFER, json=body, headers=headers)
            else:
                response = http.post(V1_PREDICT, json={"images": pixels.tolist()}, headers=headers)
        except httpx.TransportError as exc:
            outcome.finished, outcome.error = time.monotonic(), type(exc).__name__
            time.sleep(0.01)  # the server is gone or going: do not spin
            return outcome
        outcome.finished, outcome.status = time.monotonic(), response.status_code
        outcome.retry_after = response.headers.get("retry-after")
        payload = response.json()
        if response.status_code != 200:
            outcome.error = payload.get("error", repr(payload))
        elif use_v2:
            output = payload["outputs"][0]
            outcome.version = int(payload["model_version"])
            outcome.labels = np.asarray(output["data"]).reshape(output["shape"]).argmax(axis=1).tolist()
        else:
            outcome.version = payload["version"]
            outcome.labels = [prediction["label"] for prediction in payload["predictions"]]
        return outcome


@dataclass
class ReadinessPoller:
    """GET /readyz every few milliseconds on fresh connections; records (time, status or None)."""

    url: str
    interval_s: float = 0.02
    samples: list[tuple[float, int | None]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=5, limits=httpx.Limits(max_keepalive_connections=0)) as http:
            while not self._stop.is_set():
                try:
                    status: int | None = http.get("/readyz").status_code
                except httpx.TransportError:
                    status = None
                self.samples.append((time.monotonic(), status))
                time.sleep(self.interval_s)
