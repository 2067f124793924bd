"""The README's screenshot of the page: a drawn digit at 1280x800, with the Why map of another
digit and a unit inspected. Tests call `capture` into test-artifacts/; regenerating the committed
docs/screenshot.png is an explicit command:

    python -m tests.page_screenshot docs/screenshot.png
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from playwright.sync_api import Browser, sync_playwright

from tests.conftest import BROWSER_ARGS, start_server
from tests.page_driver import DESKTOP, draw, open_page, wait_settled

FOUR = [[(0.62, 0.12), (0.3, 0.62), (0.78, 0.62)], [(0.62, 0.3), (0.62, 0.9)]]


def capture(browser: Browser, url: str, path: Path, viewport: dict[str, int] = DESKTOP) -> None:
    """Draw a 4, explain 9 against it, inspect a conv3 map; save the viewport as a PNG."""
    phone = viewport["width"] < 760
    page, console = open_page(browser, url, viewport, touch=False)
    try:
        for stroke in FOUR:
            draw(page, stroke, steps=6)
        wait_settled(page)
        if not phone:
            page.locator("#layers .layer[data-layer='conv3'] .tile").nth(9).click()
            wait_settled(page)
            page.click("#tab-why")
            page.locator("#probabilities .prob[data-digit='9']").click()
            wait_settled(page)
            page.select_option("#attribution-versus", "4")
            wait_settled(page)
        page.screenshot(path=str(path))
    finally:
        page.close()
    if console.unexpected():
        raise RuntimeError(f"the page logged errors: {console.unexpected()}")


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m tests.page_screenshot OUT.png", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as scratch, sync_playwright() as driver:
        server = start_server(Path(scratch))
        browser = driver.chromium.launch(executable_path=shutil.which("chromium") or shutil.which("chromium-browser"),
                                         headless=True, args=BROWSER_ARGS)
        try:
            capture(browser, server.url, Path(argv[0]))
        finally:
            browser.close()
            server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
