"""The web page (draw a digit, watch the layers) and its static files."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.staticfiles import StaticFiles
from starlette.responses import FileResponse, Response

from service.api.routing import FastRoute, route

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"


async def page(request: Request) -> Response:
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html")


def routes() -> list[FastRoute]:
    return [route("/", page, methods=["GET"], summary="The page", tags=["page"], include_in_schema=False)]


def mount_static(app: FastAPI) -> None:
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
