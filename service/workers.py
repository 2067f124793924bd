"""`--workers N`: N server processes on one port, each with its own ONNX Runtime sessions and
batchers. The parent only supervises: it refuses a port in use, starts the workers (spawned, so
that no ONNX Runtime thread pool is forked), forwards SIGTERM/SIGINT (drain) and SIGHUP (reload)
to them, restarts one that dies, and exits with their status. Each worker loads its models and
then binds the port with SO_REUSEPORT, so the kernel spreads connections across workers.
Metrics are summed across workers through prometheus-client's multiprocess mode."""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import signal
import tempfile
import time
from multiprocessing.process import BaseProcess
from multiprocessing.synchronize import Event
from types import FrameType

from service.config import Settings

log = logging.getLogger(__name__)
METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"  # read by prometheus_client when it is imported
STARTUP_REFUSED = 2
RESTART_PAUSE_S = 1.0


def _worker(settings: Settings, bound: Event) -> None:
    from service.server import run_server

    raise SystemExit(run_server(settings, reuse_port=True, bound=bound.set))


class Supervisor:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.context = multiprocessing.get_context("spawn")
        self.workers: dict[int, BaseProcess] = {}
        self.stopping = False
        self.started_at = time.monotonic()

    def spawn(self, index: int) -> bool:
        """Start worker `index` and wait until it serves; False when it exited instead."""
        bound = self.context.Event()
        process = self.context.Process(target=_worker, args=(self.settings, bound), name=f"mnist-serve-worker-{index}")
        process.start()
        self.workers[index] = process
        while not bound.wait(0.2):
            if not process.is_alive():
                return False
        log.info("worker %d serving (pid %d)", index, process.pid)
        return True

    def forward(self, sig: int, _: FrameType | None = None) -> None:
        if sig in (signal.SIGTERM, signal.SIGINT):
            self.stopping = True
        for process in self.workers.values():
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, signal.SIGTERM if sig == signal.SIGINT else sig)

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self.forward)
        # One after the other: a worker that refuses to start stops the rest from being tried (one
        # 'refusing to start' line), and the models' memory is not claimed by all of them at once.
        for index in range(self.settings.workers):
            if self.stopping or not self.spawn(index):
                break
        status = 0
        while self.workers:
            time.sleep(0.2)
            for index, process in list(self.workers.items()):
                if process.is_alive():
                    continue
                process.join()
                code = process.exitcode or 0
                _mark_dead(process.pid)
                del self.workers[index]
                if code == STARTUP_REFUSED and not self.stopping:
                    # a worker that cannot honour the settings: the others cannot either
                    self.forward(signal.SIGTERM)
                    status = STARTUP_REFUSED
                elif not self.stopping:
                    log.error("worker %d (pid %s) exited with %s; starting another", index, process.pid, code)
                    time.sleep(RESTART_PAUSE_S)
                    self.spawn(index)
                elif code not in (0, -signal.SIGTERM):  # -SIGTERM: stopped while it was still starting
                    status = status or (code if code > 0 else 128 - code)
        return status


def _mark_dead(pid: int | None) -> None:
    if pid is not None and os.environ.get(METRICS_DIR_ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)


def supervise(settings: Settings) -> int:
    """Run `settings.workers` worker processes until they stop; their exit status."""
    metrics_dir = tempfile.mkdtemp(prefix="mnist-serve-metrics-")
    os.environ[METRICS_DIR_ENV] = metrics_dir  # inherited by the spawned workers
    log.info("serving with %d workers on %s:%d", settings.workers, settings.host, settings.port)
    try:
        return Supervisor(settings).run()
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
