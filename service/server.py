"""Run the app under uvicorn: refuse loudly when the settings cannot be honoured, load the models
before the port is bound, and drop readiness as soon as a shutdown signal arrives."""

from __future__ import annotations

import asyncio
import errno
import logging
import signal
import socket
import sys
from collections.abc import Callable
from types import FrameType

import uvicorn

from service import connections, memory, repository
from service.config import Settings
from service.errors import ProviderError
from service.grpc.frontend import GrpcFrontEnd, GrpcStartError, check_port
from service.logs import configure_logging
from service.main import create_app
from service.registry import ModelRegistry

log = logging.getLogger(__name__)
REFUSED_EXIT_STATUS = 2


class StartupRefused(RuntimeError):
    """The server cannot do what its settings ask; the message is one line for the operator."""


def refuse(reason: str) -> int:
    """One line on stderr, no traceback: what an operator reads when a container will not start."""
    print(f"refusing to start: {reason}", file=sys.stderr, flush=True)
    return REFUSED_EXIT_STATUS


class DrainingServer(uvicorn.Server):
    """On SIGTERM/SIGINT: report not-ready at once; after `drain_delay_s` (a load balancer's health
    check takes the server out meanwhile; a second signal cuts it short) let uvicorn stop accepting
    and finish in-flight requests within what is left of the grace period; the app's lifespan then
    drains the batchers."""

    def __init__(self, config: uvicorn.Config, registry: ModelRegistry, on_drain: Callable[[], None],
                 drain_delay_s: float = 0.0) -> None:
        super().__init__(config)
        self._registry = registry
        self._on_drain = on_drain  # the gRPC front end stops taking calls too
        self._drain_delay_s = drain_delay_s
        self._grace_s = config.timeout_graceful_shutdown or 0.0
        self._delayed: asyncio.TimerHandle | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        first = self._registry.begin_draining()
        if first:
            log.info("%s received: not ready, draining (delay %gs, grace period %gs)", signal.Signals(sig).name,
                     self._drain_delay_s, self._grace_s)
        if first and self._drain_delay_s > 0:
            loop = asyncio.get_event_loop()
            loop.call_soon_threadsafe(self._stop_later, loop, sig, frame)
            return
        if self._delayed is not None:
            self._delayed.cancel()
        self._stop(sig, frame)

    def _stop_later(self, loop: asyncio.AbstractEventLoop, sig: int, frame: FrameType | None) -> None:
        if not self.should_exit:
            self._delayed = loop.call_later(self._drain_delay_s, self._stop, sig, frame)

    def _stop(self, sig: int, frame: FrameType | None) -> None:
        self._delayed = None
        self.config.timeout_graceful_shutdown = self._registry.grace_left(self._grace_s)  # type: ignore[assignment]
        super().handle_exit(sig, frame)
        if sig == signal.SIGTERM:
            # uvicorn re-raises captured signals once it has shut down, which would end the process
            # killed by SIGTERM (-15); a graceful drain is a clean exit, status 0.
            self._captured_signals = [captured for captured in self._captured_signals if captured != signal.SIGTERM]
        self._on_drain()


def check_models_dir(settings: Settings) -> None:
    if not settings.models_dir.is_dir():
        raise StartupRefused(f"models_dir {settings.models_dir} does not exist or is not a directory")


async def load_models(registry: ModelRegistry, settings: Settings) -> None:
    """Every model, built and warmed; refuse when the device cannot be had or nothing is servable."""
    try:
        await registry.load_all()
    except ProviderError as exc:
        raise StartupRefused(str(exc)) from None
    if not registry.names():
        refused = "; ".join(registry.failures.values()) or f"no <name>/<version>/model.onnx under {settings.models_dir}"
        raise StartupRefused(f"no valid model to serve ({refused})")
    if settings.default_model not in registry.names():
        log.warning("default_model %r is not served: /v1/predict, /v1/activations and /v1/explain answer 404 "
                    "(served: %s)", settings.default_model, ", ".join(registry.names()))


def bind(settings: Settings, reuse_port: bool = False) -> socket.socket:
    """The listening socket. `reuse_port`: workers of one server each bind the port (SO_REUSEPORT)."""
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    sock = socket.socket(family=family)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((settings.host, settings.port))
    except OSError as exc:
        sock.close()
        why = "the port is in use" if exc.errno == errno.EADDRINUSE else exc.strerror or str(exc)
        raise StartupRefused(f"cannot bind {settings.host}:{settings.port}: {why}") from None
    sock.set_inheritable(True)
    return sock


def run_server(settings: Settings, reuse_port: bool = False, bound: Callable[[], None] | None = None) -> int:
    """Serve until a shutdown signal; the exit status. With `workers` > 1 this process supervises
    that many workers, each of which runs this function with `reuse_port`, calling `bound` once
    its models are loaded and its socket is bound."""
    configure_logging(settings.log_level, settings.log_format)
    try:
        check_models_dir(settings)
        if refusal := repository.exposure(settings) or connections.ensure_file_limit(settings):
            raise StartupRefused(refusal)
        memory.map_large_blocks()
        if settings.workers > 1 and not reuse_port:
            bind(settings).close()  # a port in use is refused here, before any worker starts
            check_port(settings)
    except (StartupRefused, GrpcStartError) as exc:
        return refuse(str(exc))
    if settings.workers > 1 and not reuse_port:
        from service.workers import supervise

        return supervise(settings)
    app = create_app(settings)
    registry: ModelRegistry = app.state.registry
    config = uvicorn.Config(
        app, host=settings.host, port=settings.port, log_config=None, access_log=False, lifespan="on",
        # seconds, float accepted; int(grace) or None turned a grace under 1 s into waiting for ever
        timeout_graceful_shutdown=settings.shutdown_grace_s,  # type: ignore[arg-type]
        **connections.uvicorn_options(settings),
    )
    grpc_front = GrpcFrontEnd.for_app(app, settings)
    server = DrainingServer(config, registry, grpc_front.drain, settings.drain_delay_s)

    async def serve() -> int:
        try:
            await load_models(registry, settings)
            sock = bind(settings, reuse_port)
            await grpc_front.start(reuse_port)
        except (StartupRefused, GrpcStartError) as exc:
            return refuse(str(exc))
        log.info("serving %s on http://%s:%d (device %s, %d threads per session)", settings.models_dir,
                 settings.host, settings.port, settings.device, settings.intra_op_threads)
        if bound is not None:
            bound()
        await server.serve(sockets=[sock])
        await grpc_front.stop()
        return 0 if server.started else 1

    return uvicorn.server.asyncio_run(serve(), loop_factory=config.get_loop_factory())
