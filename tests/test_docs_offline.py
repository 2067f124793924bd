"""/docs works with no network but the server's own: Swagger UI is served from assets shipped in an
installed package (fastapi-offline), in real headless Chromium with every other host blocked."""

from __future__ import annotations

from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import Browser, Route

pytestmark = pytest.mark.slow


def open_offline(browser: Browser, url: str) -> tuple[object, list[str]]:
    page = browser.new_page()
    outside: list[str] = []
    server = urlsplit(url).netloc

    def only_the_server(route: Route) -> None:
        if urlsplit(route.request.url).netloc == server or route.request.url.startswith("data:"):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    page.route("**/*", only_the_server)
    page.goto(url)
    return page, outside


def test_swagger_ui_renders_every_operation_offline(browser: Browser, live_server: str) -> None:
    page, outside = open_offline(browser, f"{live_server}/docs")
    page.wait_for_selector(".opblock", timeout=30_000)
    operations = page.locator(".opblock").count()
    spec = page.evaluate("() => fetch('/openapi.json').then(r => r.json())")
    documented = sum(len(methods) for methods in spec["paths"].values())
    assert operations == documented >= 29
    assert outside == []
    page.close()


def test_redoc_is_not_served(live_server: str) -> None:
    """ReDoc's bundle fetches its logo from a CDN: it is left out rather than half offline."""
    assert httpx.get(f"{live_server}/redoc", timeout=10).status_code == 404
