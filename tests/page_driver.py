"""Driving the page (service/static/) in headless Chromium with Playwright: open it, draw with the
mouse or a finger, wait until every request for the current input has settled, read what it shows.
Shared by tests/test_page*.py and tests/page_screenshot.py."""

from __future__ import annotations

import io
import math
import re
from dataclasses import dataclass, field

import numpy as np
from PIL import Image
from playwright.sync_api import Browser, ConsoleMessage, Page

DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
SETTLE_TIMEOUT_MS = 30_000

Point = tuple[float, float]  # fractions of the pad's width and height

SETTLED = """() => {
  const app = document.querySelector('#app');
  return app.dataset.pending === '0' && app.dataset.seq === app.dataset.settledSeq && app.dataset.state !== 'busy';
}"""

# Chromium reports every non-2xx answer as a console error; the tests that provoke one allow it.
HTTP_ERROR = re.compile(r"^Failed to load resource: (the server responded with a status of \d+|net::ERR_)")


@dataclass
class Console:
    """What the page wrote to the console, and its uncaught errors."""

    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    uncaught: list[str] = field(default_factory=list)

    def record(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(message.text)
        elif message.type == "warning":
            self.warnings.append(message.text)

    def unexpected(self) -> list[str]:
        return self.uncaught + [text for text in self.errors if not HTTP_ERROR.match(text)]


def open_page(browser: Browser, url: str, viewport: dict[str, int] = DESKTOP, touch: bool = False) -> tuple[Page, Console]:
    """The page with its models loaded (state idle), and its console."""
    page = browser.new_page(viewport=viewport, has_touch=touch, is_mobile=touch)
    console = Console()
    page.on("console", console.record)
    page.on("pageerror", lambda error: console.uncaught.append(str(error)))
    page.goto(url)
    page.wait_for_function("() => document.querySelector('#app').dataset.state === 'idle'", timeout=SETTLE_TIMEOUT_MS)
    return page, console


def pad_points(page: Page, points: list[Point]) -> list[tuple[float, float]]:
    box = page.locator("#pad").bounding_box()
    assert box is not None
    return [(box["x"] + x * box["width"], box["y"] + y * box["height"]) for x, y in points]


def draw(page: Page, points: list[Point], steps: int = 3) -> None:
    """One stroke with the mouse (Pointer Events) through the given points of the pad."""
    absolute = pad_points(page, points)
    page.mouse.move(*absolute[0])
    page.mouse.down()
    for x, y in absolute[1:]:
        page.mouse.move(x, y, steps=steps)
    page.mouse.up()


def draw_with_touch(page: Page, points: list[Point], steps: int = 8) -> None:
    """One stroke with a finger: touch events straight into Chromium's input pipeline (CDP)."""
    absolute = pad_points(page, points)
    path = [absolute[0]]
    for (x0, y0), (x1, y1) in zip(absolute, absolute[1:]):
        path += [(x0 + (x1 - x0) * i / steps, y0 + (y1 - y0) * i / steps) for i in range(1, steps + 1)]
    cdp = page.context.new_cdp_session(page)
    cdp.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": [{"x": path[0][0], "y": path[0][1]}]})
    for x, y in path[1:]:
        cdp.send("Input.dispatchTouchEvent", {"type": "touchMove", "touchPoints": [{"x": x, "y": y}]})
    cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
    cdp.detach()


ONE: list[Point] = [(0.5, 0.12), (0.5, 0.5), (0.5, 0.88)]
ZERO: list[Point] = [(0.5 + 0.24 * math.sin(2 * math.pi * i / 16), 0.5 - 0.34 * math.cos(2 * math.pi * i / 16))
                     for i in range(17)]
SEVEN: list[Point] = [(0.25, 0.15), (0.75, 0.15), (0.45, 0.88)]


def draw_one(page: Page) -> None:
    draw(page, ONE, steps=8)


def draw_zero(page: Page) -> None:
    draw(page, ZERO, steps=1)


def wait_settled(page: Page) -> None:
    page.wait_for_function(SETTLED, timeout=SETTLE_TIMEOUT_MS)


def probabilities(page: Page) -> dict[int, float]:
    rows = page.locator("#probabilities .prob").evaluate_all("rows => rows.map(row => [row.dataset.digit, row.dataset.value])")
    return {int(digit): float(value) for digit, value in rows if value != ""}


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def in_viewport(page: Page, selector: str) -> bool:
    """The element's whole box lies inside the viewport, as the page is scrolled now."""
    return page.locator(selector).evaluate("""el => { const r = el.getBoundingClientRect();
        return r.width > 0 && r.height > 0 && r.left >= 0 && r.top >= 0
               && r.right <= window.innerWidth + 0.5 && r.bottom <= window.innerHeight + 0.5; }""")
