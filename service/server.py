"""Run the app under uvicorn, with readiness dropped as soon as a shutdown signal arrives."""

from __future__ import annotations

import logging
import signal
from types import FrameType

import uvicorn

from service.config import Settings
from service.errors import ProviderError
from service.logs import configure_logging
from service.main import create_app

log = logging.getLogger(__name__)


class DrainingServer(uvicorn.Server):
    """On SIGTERM/SIGINT: report not-ready at once, then let uvicorn stop accepting and finish
    in-flight requests; the app's lifespan then drains the batchers."""

    def __init__(self, config: uvicorn.Config, registry: object) -> None:
        super().__init__(config)
        self._registry = registry

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        first = not self._registry.draining  # type: ignore[attr-defined]
        self._registry.draining = True  # type: ignore[attr-defined]
        super().handle_exit(sig, frame)
        if sig == signal.SIGTERM:
            # uvicorn re-raises captured signals once it has shut down, which would end the process
            # killed by SIGTERM (-15); a graceful drain is a clean exit, status 0.
            self._captured_signals = [captured for captured in self._captured_signals if captured != signal.SIGTERM]
        if first:
            log.info("%s received: not ready, draining (grace period %gs)", signal.Signals(sig).name,
                     self.config.timeout_graceful_shutdown or 0)


def run_server(settings: Settings) -> int:
    configure_logging(settings.log_level, settings.log_format)
    app = create_app(settings)
    config = uvicorn.Config(
        app, host=settings.host, port=settings.port, log_config=None, access_log=False,
        lifespan="on",
        # seconds, float accepted; int(grace) or None turned a grace under 1 s into waiting for ever
        timeout_graceful_shutdown=settings.shutdown_grace_s,  # type: ignore[arg-type]
    )
    server = DrainingServer(config, app.state.registry)
    log.info("serving %s on http://%s:%d (device %s, %d threads per session)", settings.models_dir,
             settings.host, settings.port, settings.device, settings.intra_op_threads)
    try:
        server.run()
    except ProviderError as exc:
        log.error("refusing to start: %s", exc)
        return 2
    if not server.started:
        log.error("server did not start (see the errors above)")
        return 1
    return 0
