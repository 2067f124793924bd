"""The page (service/static/) in real headless Chromium, driven by Playwright, against a real
`mnist-serve serve` on the committed models: the one-screen layout at 1280x800 and on a phone, live
updates while drawing, the layers, the model and version picker, accessibility, and a happy path
with no console error. Inspection, attribution and input honesty: tests/test_page_insight.py;
errors, restarts and the busy state: tests/test_page_resilience.py."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image
from playwright.sync_api import Browser, Page, expect

from tests.page_screenshot import capture
from tests.page_driver import (DESKTOP, ONE, PHONE, draw, draw_one, draw_with_touch, draw_zero, in_viewport,
                               open_page, probabilities, wait_settled)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def served_models(live_server: str) -> dict[str, dict[str, Any]]:
    listing = httpx.get(f"{live_server}/v1/models", timeout=10).json()
    return {model["name"]: model for model in listing["models"]}


@pytest.fixture
def page(browser: Browser, live_server: str) -> Iterator[Page]:
    page, console = open_page(browser, live_server)
    yield page
    page.close()
    assert console.unexpected() == [], f"console errors: {console.unexpected()}"


def layer_names(page: Page) -> list[str]:
    return page.locator("#layers .layer").evaluate_all("layers => layers.map(l => l.dataset.layer)")


def test_page_lists_the_models_and_their_versions(page: Page, served_models: dict[str, dict[str, Any]]) -> None:
    options = page.locator("#model-select option")
    expect(options).to_have_count(len(served_models))
    assert sorted(options.evaluate_all("opts => opts.map(o => o.value)")) == sorted(served_models)
    expect(page.locator("#model-select")).to_have_value("cnn-pytorch")
    versions = page.locator("#version-select option").evaluate_all("opts => opts.map(o => Number(o.value))")
    assert versions == sorted(served_models["cnn-pytorch"]["versions"], reverse=True)
    expect(page.locator("#version-select")).to_have_value(str(served_models["cnn-pytorch"]["version"]))
    expect(page.locator("#model-info")).to_contain_text("PyTorch")
    assert layer_names(page) == [layer["name"] for layer in served_models["cnn-pytorch"]["layers"]]
    expect(page.locator("#prediction")).to_have_text("–")
    expect(page.locator("#error")).to_be_hidden()


def test_one_screen_at_1280x800(page: Page, served_models: dict[str, dict[str, Any]]) -> None:
    """Pad, prediction, probabilities, the Why map and every layer, drawn, all inside 1280x800."""
    draw_zero(page)
    wait_settled(page)
    expect(page.locator("#prediction")).to_have_text("0")
    assert page.evaluate("() => [document.documentElement.scrollWidth, document.documentElement.scrollHeight]") == \
        [DESKTOP["width"], DESKTOP["height"]]
    for selector in ("#pad", "#prediction", "#model-input", "#probabilities", "#attribution", "#attribution-legend",
                     "#steps", "#clear", ".upload", "#model-select"):
        assert in_viewport(page, selector), selector
    expect(page.locator("#attribution")).to_have_attribute("data-drawn", "true")
    for layer in served_models["cnn-pytorch"]["layers"]:
        column = f"#layers .layer[data-layer='{layer['name']}']"
        assert in_viewport(page, column), layer["name"]
        if len(layer["shape"]) == 3:
            tiles = page.locator(f"{column} img.tile[src^='data:image/png']")
            expect(tiles).to_have_count(layer["shape"][0])
            assert tiles.evaluate_all("""ts => ts.every(t => { const r = t.getBoundingClientRect();
                return t.complete && t.naturalWidth > 0 && r.width >= 4 && r.bottom <= window.innerHeight; })"""), layer["name"]
        else:
            expect(page.locator(f"{column} canvas.units")).to_have_attribute("data-drawn", "true")
        assert float(page.locator(column).get_attribute("data-min")) <= float(page.locator(column).get_attribute("data-max"))
        expect(page.locator(f"{column} [data-testid=layer-range]")).not_to_be_empty()


def test_it_updates_while_drawing(page: Page) -> None:
    """A slow stroke: the prediction and the layers arrive before the pen is lifted."""
    points = [(0.5, 0.12 + 0.76 * step / 12) for step in range(13)]
    box = page.locator("#pad").bounding_box()
    assert box is not None
    page.mouse.move(box["x"] + points[0][0] * box["width"], box["y"] + points[0][1] * box["height"])
    page.mouse.down()
    for x, y in points[1:]:
        page.mouse.move(box["x"] + x * box["width"], box["y"] + y * box["height"], steps=2)
        page.wait_for_timeout(120)
    page.wait_for_function("() => document.querySelector('#prediction').textContent !== '–'", timeout=10_000)
    assert page.locator("#layers .layer[data-layer='conv1']").get_attribute("data-min") is not None
    page.mouse.up()
    wait_settled(page)
    expect(page.locator("#prediction")).to_have_text("1")


def test_drawing_undo_and_clear(page: Page) -> None:
    draw_one(page)
    wait_settled(page)
    expect(page.locator("#prediction")).to_have_text("1")
    shown = probabilities(page)
    assert sorted(shown) == list(range(10)) and sum(shown.values()) == pytest.approx(1.0, abs=1e-3)
    expect(page.locator("#probabilities .prob.top")).to_have_attribute("data-digit", "1")
    expect(page.locator("#probabilities .prob[aria-checked=true]")).to_have_attribute("data-digit", "1")
    draw(page, [(0.2, 0.3), (0.8, 0.3)])  # a bar across
    wait_settled(page)
    page.click("#undo")
    wait_settled(page)
    expect(page.locator("#prediction")).to_have_text("1")
    page.click("#clear")
    expect(page.locator("#prediction")).to_have_text("–")
    assert probabilities(page) == {}
    expect(page.locator("#layers .layer[data-min]")).to_have_count(0)
    expect(page.locator("#undo")).to_be_disabled()


def test_model_and_version_picker(page: Page, served_models: dict[str, dict[str, Any]]) -> None:
    other = "lenet-pytorch" if "lenet-pytorch" in served_models else "cnn-tensorflow"
    draw_one(page)
    wait_settled(page)
    with page.expect_response(lambda response: f"/v1/models/{other}/versions/" in response.url
                              and "/activations" in response.url) as answer:
        page.select_option("#model-select", other)
    assert answer.value.ok
    wait_settled(page)
    expect(page.locator("#prediction")).to_have_text("1")
    expect(page.locator("#model-info")).to_contain_text(served_models[other]["architecture"])
    assert layer_names(page) == [layer["name"] for layer in served_models[other]["layers"]]
    versions = served_models[other]["versions"]
    expect(page.locator("#version-select option")).to_have_count(len(versions))
    if len(versions) > 1:
        oldest = str(min(versions))
        with page.expect_response(lambda response: f"/versions/{oldest}/activations" in response.url) as answer:
            page.select_option("#version-select", oldest)
        assert answer.value.ok
        wait_settled(page)
        expect(page.locator("#model-info")).to_contain_text(f"version {oldest}")


def test_phone_keeps_the_prediction_in_view_while_drawing(browser: Browser, live_server: str) -> None:
    page, console = open_page(browser, live_server, viewport=PHONE, touch=True)
    assert page.evaluate("() => document.documentElement.scrollWidth") <= PHONE["width"]
    assert in_viewport(page, "#pad") and in_viewport(page, "#result-bar")
    page.evaluate("""() => { window.pointerTypes = new Set();
        document.querySelector('#pad').addEventListener('pointermove', e => window.pointerTypes.add(e.pointerType)); }""")
    scroll_before = page.evaluate("() => window.scrollY")
    draw_with_touch(page, ONE)
    wait_settled(page)
    assert page.evaluate("() => [...window.pointerTypes]") == ["touch"]
    assert page.evaluate("() => window.scrollY") == scroll_before  # the stroke drew; it did not scroll the page
    expect(page.locator("#prediction")).to_have_text("1")
    assert in_viewport(page, "#prediction") and in_viewport(page, "#pad")
    page.evaluate("() => window.scrollTo(0, document.querySelector('#network').offsetTop)")  # further down:
    assert in_viewport(page, "#result-bar")  # the prediction bar stays on top
    assert page.evaluate("() => document.documentElement.scrollWidth") <= PHONE["width"]
    page.close()
    assert console.unexpected() == []


def test_roles_names_and_tab_order(page: Page) -> None:
    pad = page.locator("#pad")
    expect(pad).to_have_attribute("role", "application")
    assert "Drawing pad" in pad.get_attribute("aria-label")
    assert page.locator("#pad-help").inner_text().strip()  # the text alternative: what to do without a pointer
    assert page.locator("[role=listitem] button, button[role]:not([role=tab]), [role=button]").count() == 0
    assert page.evaluate("() => [...document.querySelectorAll('[onclick], div[tabindex], span[tabindex]')]"
                         ".filter(el => !el.getAttribute('role')).length") == 0
    expect(page.locator("#probabilities[role=radiogroup] [role=radio]")).to_have_count(10)
    expect(page.locator("#tabs[role=tablist] [role=tab]")).to_have_count(4)
    expect(page.locator("#layers [role=listbox]").first).to_have_attribute("aria-activedescendant", "map-conv1-0")
    controls = "button, input, select, [role=application], [role=listbox], [role=slider], [role=radio], [role=tab]"
    unnamed = page.evaluate(f"""() => [...document.querySelectorAll('{controls}')]
        .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')
                      && !el.getAttribute('aria-labelledby') && !el.textContent.trim())
        .map(el => el.id || el.outerHTML.slice(0, 80))""")
    assert unnamed == []

    draw_one(page)  # Clear and Undo are disabled while the pad is empty
    wait_settled(page)
    reached: list[str] = []
    for _ in range(60):
        page.keyboard.press("Tab")
        reached.append(page.evaluate("() => { const el = document.activeElement; return el.id || el.dataset.layer || "
                                     "el.closest('[data-layer]')?.dataset.layer || el.getAttribute('role') || el.tagName; }"))
    first_cycle = reached[: reached.index(reached[0], 1)] if reached[0] in reached[1:] else reached
    assert 15 <= len(set(first_cycle)) <= 45, first_cycle
    for control in ("model-select", "pad", "clear", "upload", "tab-why", "attribution-method", "conv1", "fc2"):
        assert control in reached, f"#{control} is not reachable with Tab: {reached}"


def test_a_happy_path_writes_nothing_to_the_console(browser: Browser, live_server: str, artifacts_dir: Path) -> None:
    """Draw, every tab, a unit, another digit, another model: no error and no warning on the console;
    the time from the end of each stroke to the prediction and to every layer drawn is recorded."""
    page, console = open_page(browser, live_server)
    timings = []
    for stroke in (ONE, ZERO_SMALL, ONE):
        if page.locator("#clear").is_enabled():
            page.click("#clear")
        draw(page, stroke, steps=3)
        wait_settled(page)
        timings.append({"prediction_ms": int(page.locator("#app").get_attribute("data-prediction-ms")),
                        "layers_ms": int(page.locator("#app").get_attribute("data-layers-ms"))})
    for tab in ("#tab-unit", "#tab-frameworks", "#tab-occlusion", "#tab-why"):
        page.click(tab)
        wait_settled(page)
    page.locator("#layers .layer[data-layer='conv2'] .tile").nth(3).click()
    wait_settled(page)
    page.locator("#probabilities .prob[data-digit='7']").click()
    wait_settled(page)
    page.select_option("#model-select", "cnn-tensorflow")
    wait_settled(page)
    page.close()
    (artifacts_dir / "page-timing.json").write_text(json.dumps(timings, indent=2))
    assert console.errors == [] and console.warnings == [] and console.uncaught == []
    assert all(0 < timing["prediction_ms"] <= timing["layers_ms"] < 10_000 for timing in timings), timings


def test_screenshots(browser: Browser, live_server: str, artifacts_dir: Path) -> None:
    """The README's scene at both sizes, into test-artifacts/ (docs/screenshot.png is regenerated
    by `python -m tests.page_screenshot docs/screenshot.png`, never by a test)."""
    for name, viewport in (("page-desktop.png", DESKTOP), ("page-phone.png", PHONE)):
        capture(browser, live_server, artifacts_dir / name, viewport)
        with Image.open(artifacts_dir / name) as shot:
            assert shot.size == (viewport["width"], viewport["height"])


ZERO_SMALL = [(0.5 + 0.18 * x, 0.5 + 0.26 * y) for x, y in
              ((0.0, -1.0), (0.7, -0.7), (1.0, 0.0), (0.7, 0.7), (0.0, 1.0), (-0.7, 0.7), (-1.0, 0.0), (-0.7, -0.7),
               (0.0, -1.0))]
