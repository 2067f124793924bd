"""The page when things go wrong, against a server of its own (so it can be stopped and started
again): a failed upload (422, 413) clears what the last digit showed; a slow answer is marked busy;
a server restart is recovered from without a reload: the banner clears and every panel, the unit
inspector's kernels included, is fetched again."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from playwright.sync_api import Browser, Page, Route, expect

from tests.conftest import ServerProcess, start_server
from tests.page_driver import draw, draw_one, draw_zero, open_page, png_bytes, wait_settled

pytestmark = pytest.mark.slow

MAX_ENCODED_BYTES = 20_000
SETTINGS = {"MNIST_SERVE_MAX_ENCODED_IMAGE_BYTES": str(MAX_ENCODED_BYTES)}


@dataclass
class Restartable:
    """This module's server; `restart` stops it and starts another on the same port."""

    server: ServerProcess
    logs: Path

    @property
    def url(self) -> str:
        return self.server.url

    def stop(self) -> None:
        self.server.stop()

    def start_again(self) -> None:
        url = self.server.url
        self.server = start_server(self.logs, {**SETTINGS, "MNIST_SERVE_PORT": url.rsplit(":", 1)[1]}, wait_ready=False)
        self.server.url = url
        self.server.wait_ready()


@pytest.fixture(scope="module")
def own_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Restartable]:
    logs = tmp_path_factory.mktemp("page-server")
    holder = Restartable(start_server(logs, SETTINGS), logs)
    yield holder
    holder.stop()


@pytest.fixture
def page(browser: Browser, own_server: Restartable) -> Iterator[Page]:
    page, console = open_page(browser, own_server.url)
    yield page
    page.close()
    assert console.unexpected() == [], f"console errors: {console.unexpected()}"


def assert_outputs_cleared(page: Page) -> None:
    expect(page.locator("#prediction")).to_have_text("–")
    assert page.locator("#probabilities .prob").evaluate_all("rows => rows.every(r => r.dataset.value === '')")
    expect(page.locator("#model-input")).not_to_have_attribute("data-drawn", "true")
    expect(page.locator("#layers .layer[data-min]")).to_have_count(0)
    expect(page.locator("#attribution")).not_to_have_attribute("data-drawn", "true")
    expect(page.locator("#steps .step")).to_have_count(0)


@pytest.mark.parametrize("status", [422, 413])
def test_a_failed_upload_clears_the_last_digit(page: Page, tmp_path: Path, status: int) -> None:
    draw_one(page)
    wait_settled(page)
    expect(page.locator("#prediction")).to_have_text("1")
    expect(page.locator("#attribution")).to_have_attribute("data-drawn", "true")
    path = tmp_path / "upload.png"
    if status == 422:
        path.write_bytes(b"these bytes are no image")
    else:  # noise does not compress: a PNG over the server's max_encoded_image_bytes
        path.write_bytes(png_bytes(np.random.default_rng(0).integers(0, 256, (200, 200), dtype=np.uint8)))
        assert path.stat().st_size > MAX_ENCODED_BYTES
    with page.expect_response(lambda response: "/activations" in response.url) as answer:
        page.set_input_files("#upload", str(path))
    assert answer.value.status == status
    wait_settled(page)
    error = page.locator("#error")
    expect(error).to_be_visible()
    expect(error).to_have_attribute("role", "alert")
    expect(error).to_contain_text(str(status))
    expect(page.locator("#app")).to_have_attribute("data-state", "error")
    assert_outputs_cleared(page)

    page.click("#clear")
    draw_zero(page)
    wait_settled(page)
    expect(error).to_be_hidden()
    expect(page.locator("#prediction")).to_have_text("0")


def test_a_slow_answer_is_marked_busy(page: Page) -> None:
    draw_one(page)
    wait_settled(page)
    held: list[Route] = []
    page.route("**/activations*", lambda route: held.append(route))
    draw(page, [(0.3, 0.2), (0.5, 0.12)])  # a flag on the 1
    page.wait_for_function("() => document.querySelector('#app').dataset.pending !== '0'")
    expect(page.locator("#app")).to_have_attribute("data-state", "busy")
    expect(page.locator("#busy")).to_be_visible()
    expect(page.locator("#busy")).to_have_text("Updating…")
    for region in ("#result-bar", "#result", "#network", ".detail-panel"):
        expect(page.locator(region)).to_have_attribute("aria-busy", "true")
    expect(page.locator("#app")).to_have_class("stale")  # the 1 still shown is marked as old
    expect(page.locator("#prediction")).to_have_text("1")
    page.wait_for_timeout(300)
    for route in held:
        route.continue_()
    page.unroute("**/activations*")
    wait_settled(page)
    expect(page.locator("#prediction")).to_have_text(re.compile(r"^\d$"))
    expect(page.locator("#busy")).not_to_be_visible()
    for region in ("#result-bar", "#network"):
        expect(page.locator(region)).to_have_attribute("aria-busy", "false")
    expect(page.locator("#app")).not_to_have_class("stale")


def test_an_unreachable_service_clears_and_recovers(page: Page) -> None:
    draw_one(page)
    wait_settled(page)
    page.route("**/v1/**", lambda route: route.abort("connectionrefused"))
    page.click("#clear")
    draw_zero(page)
    wait_settled(page)
    expect(page.locator("#error")).to_contain_text("unreachable")
    assert_outputs_cleared(page)
    page.unroute("**/v1/**")  # the page retries by itself
    expect(page.locator("#prediction")).to_have_text("0", timeout=15_000)
    expect(page.locator("#error")).to_be_hidden()


def test_recovery_after_a_server_restart(browser: Browser, own_server: Restartable) -> None:
    """Stop the server, change the model, start the server again: the page recovers without a
    reload: the prediction comes back, the banner goes, and the unit inspector (its kernels too)
    loads again."""
    page, console = open_page(browser, own_server.url)
    try:
        draw_one(page)
        wait_settled(page)
        page.locator("#layers .layer[data-layer='conv2'] .tile").nth(2).click()
        wait_settled(page)
        expect(page.locator("#unit-body .kernel-item")).to_have_count(32)

        own_server.stop()
        page.select_option("#model-select", "cnn-tensorflow")
        wait_settled(page)
        expect(page.locator("#error")).to_contain_text("unreachable")
        expect(page.locator("#prediction")).to_have_text("–")

        own_server.start_again()
        expect(page.locator("#prediction")).to_have_text("1", timeout=20_000)  # retried by itself
        expect(page.locator("#error")).to_be_hidden()
        expect(page.locator("#model-info")).to_contain_text("TensorFlow")
        page.locator("#layers .layer[data-layer='conv2'] .tile").nth(2).click()
        wait_settled(page)
        expect(page.locator("[data-testid=unit-title]")).to_contain_text("conv2 channel 2")
        expect(page.locator("#unit-body .kernel-item")).to_have_count(32)
        expect(page.locator("#error")).to_be_hidden()
    finally:
        page.close()
    assert console.unexpected() == [], console.unexpected()
