"""Run the app under uvicorn, with readiness dropped as soon as a shutdown signal arrives."""

from __future__ import annotations

import logging
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
        self._registry.draining = True  # type: ignore[attr-defined]
        super().handle_exit(sig, frame)


def run_server(settings: Settings) -> int:
    configure_logging(settings.log_level, settings.log_format)
    app = create_app(settings)
    config = uvicorn.Config(
        app, host=settings.host, port=settings.port, log_config=None, access_log=False,
        timeout_graceful_shutdown=int(settings.shutdown_grace_s) or None, lifespan="on",
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
