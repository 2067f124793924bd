"""The web page (service/static/) in real headless Chromium, driven by Playwright, against a real
`mnist-serve serve` on the committed models: drawing, upload, layers, kernels, occlusion, model
picker, side by side, errors, a phone-sized screen, and the README screenshot."""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import Browser, Page, expect

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parent.parent
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
SETTLE_TIMEOUT_MS = 30_000

Point = tuple[float, float]  # fractions of the pad's width and height

SETTLED = """() => {
  const app = document.querySelector('#app');
  return app.dataset.pending === '0' && app.dataset.seq === app.dataset.settledSeq && app.dataset.state !== 'busy';
}"""

CANVAS_PIXELS = """(canvas) => {
  const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
  let lit = 0, red = 0;
  for (let i = 0; i < data.length; i += 4) {
    if (data[i] + data[i + 1] + data[i + 2] > 60) lit += 1;
    if (data[i] > data[i + 2] + 40 && data[i] > data[i + 1] + 40) red += 1;
  }
  return {lit, red, total: data.length / 4};
}"""


@pytest.fixture(scope="module")
def served_models(live_server: str) -> dict[str, dict[str, Any]]:
    listing = httpx.get(f"{live_server}/v1/models", timeout=10).json()
    return {model["name"]: model for model in listing["models"]}


def open_page(browser: Browser, url: str, viewport: dict[str, int] = DESKTOP, touch: bool = False) -> tuple[Page, list[str]]:
    """The page with its models loaded, and the list its uncaught script errors are collected in."""
    page = browser.new_page(viewport=viewport, has_touch=touch, is_mobile=touch)
    script_errors: list[str] = []
    page.on("pageerror", lambda error: script_errors.append(str(error)))
    page.goto(url)
    page.wait_for_function("() => document.querySelector('#app').dataset.state === 'idle'", timeout=SETTLE_TIMEOUT_MS)
    return page, script_errors


@pytest.fixture
def page(browser: Browser, live_server: str) -> Iterator[Page]:
    page, script_errors = open_page(browser, live_server)
    yield page
    page.close()
    assert script_errors == [], f"uncaught script errors: {script_errors}"


def draw(page: Page, points: list[Point], steps: int = 3) -> None:
    """One stroke with the mouse (Pointer Events) through the given points of the pad."""
    box = page.locator("#pad").bounding_box()
    assert box is not None
    absolute = [(box["x"] + x * box["width"], box["y"] + y * box["height"]) for x, y in points]
    page.mouse.move(*absolute[0])
    page.mouse.down()
    for x, y in absolute[1:]:
        page.mouse.move(x, y, steps=steps)
    page.mouse.up()


def draw_with_touch(page: Page, points: list[Point], steps: int = 8) -> None:
    """One stroke with a finger: touch events straight into Chromium's input pipeline (CDP)."""
    box = page.locator("#pad").bounding_box()
    assert box is not None
    absolute = [(box["x"] + x * box["width"], box["y"] + y * box["height"]) for x, y in points]
    path = [absolute[0]]
    for (x0, y0), (x1, y1) in zip(absolute, absolute[1:]):
        path += [(x0 + (x1 - x0) * i / steps, y0 + (y1 - y0) * i / steps) for i in range(1, steps + 1)]
    cdp = page.context.new_cdp_session(page)
    cdp.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": [{"x": path[0][0], "y": path[0][1]}]})
    for x, y in path[1:]:
        cdp.send("Input.dispatchTouchEvent", {"type": "touchMove", "touchPoints": [{"x": x, "y": y}]})
    cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
    cdp.detach()


ONE_STROKE: list[Point] = [(0.5, 0.12), (0.5, 0.5), (0.5, 0.88)]


def draw_one(page: Page) -> None:
    draw(page, ONE_STROKE, steps=8)


def draw_zero(page: Page) -> None:
    ring = [(0.5 + 0.24 * math.sin(2 * math.pi * i / 40), 0.5 - 0.34 * math.cos(2 * math.pi * i / 40)) for i in range(41)]
    draw(page, ring, steps=2)


def wait_settled(page: Page) -> None:
    page.wait_for_function(SETTLED, timeout=SETTLE_TIMEOUT_MS)


def probabilities(page: Page, scope: str = "#probabilities") -> dict[int, float]:
    rows = page.locator(f"{scope} .prob").evaluate_all("rows => rows.map(row => [row.dataset.digit, row.dataset.value])")
    return {int(digit): float(value) for digit, value in rows}


def canvas_pixels(page: Page, selector: str) -> dict[str, int]:
    return page.locator(selector).evaluate(CANVAS_PIXELS)


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def test_page_lists_the_served_models(page: Page, served_models: dict[str, dict[str, Any]]) -> None:
    options = page.locator("#model-select option")
    expect(options).to_have_count(len(served_models))
    assert sorted(options.evaluate_all("opts => opts.map(o => o.value)")) == sorted(served_models)
    expect(page.locator("#model-select")).to_have_value("cnn-pytorch")
    expect(page.locator("#model-select option[value='cnn-pytorch']")).to_contain_text("test accuracy")
    expect(page.locator("#model-info")).to_contain_text("PyTorch")
    names = page.locator("#layers .layer").evaluate_all("sections => sections.map(s => s.dataset.layer)")
    assert names == [layer["name"] for layer in served_models["cnn-pytorch"]["layers"]]
    expect(page.locator("#error")).to_be_hidden()
    expect(page.locator("#prediction")).to_have_text("–")


def test_drawing_a_one_then_a_zero(page: Page) -> None:
    draw_one(page)
    wait_settled(page)
    expect(page.locator("#prediction")).to_have_text("1")
    expect(page.locator("#probabilities .prob")).to_have_count(10)
    shown = probabilities(page)
    assert sorted(shown) == list(range(10))
    assert sum(shown.values()) == pytest.approx(1.0, abs=1e-3)
    assert max(shown, key=shown.get) == 1
    expect(page.locator("#probabilities .prob.top")).to_have_attribute("data-digit", "1")
    model_input = canvas_pixels(page, "#model-input")
    assert model_input["total"] == 28 * 28
    assert 20 < model_input["lit"] < 28 * 28 / 2  # a thin vertical stroke, after preprocessing

    page.click("#clear")
    expect(page.locator("#prediction")).to_have_text("–")
    assert all(value == "" for value in page.locator("#probabilities .prob").evaluate_all("r => r.map(x => x.dataset.value)"))

    draw_zero(page)
    wait_settled(page)
    expect(page.locator("#prediction")).to_have_text("0")
    assert max(probabilities(page).items(), key=lambda item: item[1])[0] == 0
    expect(page.locator("#error")).to_be_hidden()


def test_undo_removes_the_last_stroke(page: Page) -> None:
    draw_one(page)
    wait_settled(page)
    draw(page, [(0.2, 0.3), (0.8, 0.3)])  # a bar across: no longer a plain 1
    wait_settled(page)
    page.click("#undo")
    wait_settled(page)
    expect(page.locator("#prediction")).to_have_text("1")
    page.click("#undo")
    expect(page.locator("#prediction")).to_have_text("–")
    expect(page.locator("#undo")).to_be_disabled()


def test_every_layer_shows_its_feature_maps_histogram_and_kernels(
        page: Page, served_models: dict[str, dict[str, Any]]) -> None:
    draw_one(page)
    wait_settled(page)
    for layer in served_models["cnn-pytorch"]["layers"]:
        section = page.locator(f"#layers .layer[data-layer='{layer['name']}']")
        expected = layer["shape"][0] if len(layer["shape"]) == 3 else 1
        maps = section.locator("[data-testid=feature-maps] img[src^='data:image/png']")
        expect(maps).to_have_count(expected)
        assert maps.evaluate_all("imgs => imgs.every(img => img.complete && img.naturalWidth > 0)"), layer["name"]
        expect(section.locator("[data-testid=histogram]")).to_have_attribute("data-drawn", "true")
        expect(section.locator("[data-testid=layer-stats]")).to_contain_text("mean")
        if layer["kind"] == "conv":
            kernels = section.locator("[data-testid=kernels] img")
            expect(kernels).to_have_count(layer["shape"][0])
            expect(kernels.first).to_be_visible()
            assert kernels.evaluate_all("imgs => imgs.every(img => img.complete && img.naturalWidth > 0)")
        else:
            expect(section.locator("[data-testid=kernels]")).to_have_count(0)


def test_a_feature_map_enlarges_with_its_value_range(page: Page) -> None:
    draw_one(page)
    wait_settled(page)
    section = page.locator("#layers .layer[data-layer='relu1']")
    section.locator(".fmap").nth(3).click()
    dialog = page.locator("#fmap-dialog")
    expect(dialog).to_be_visible()
    expect(page.locator("#fmap-title")).to_have_text("relu1 channel 3")
    expect(page.locator("#fmap-range")).to_contain_text("Values")
    low, high = float(dialog.get_attribute("data-min")), float(dialog.get_attribute("data-max"))
    assert 0.0 <= low <= high  # a ReLU's output
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    section.locator("summary").first.click()  # layers collapse
    expect(section.locator("[data-testid=feature-maps]")).to_be_hidden()


def test_occlusion_map_is_drawn_and_follows_its_controls(page: Page) -> None:
    draw_one(page)
    wait_settled(page)
    occlusion = page.locator("#occlusion")
    expect(occlusion).to_have_attribute("data-target", "1")
    expect(occlusion).to_have_attribute("data-patch", "5")
    assert canvas_pixels(page, "#occlusion")["red"] > 100  # covering the stroke lowers p(1)
    expect(page.locator("#occlusion-caption")).to_contain_text("p(1)")

    page.focus("#occlusion-patch")
    page.keyboard.press("ArrowRight")  # keyboard reachable: patch 5 -> 6
    expect(occlusion).to_have_attribute("data-patch", "6", timeout=SETTLE_TIMEOUT_MS)
    page.select_option("#occlusion-target", "7")
    expect(occlusion).to_have_attribute("data-target", "7", timeout=SETTLE_TIMEOUT_MS)


def test_model_picker_switches_the_model(page: Page, served_models: dict[str, dict[str, Any]]) -> None:
    other = "lenet-pytorch" if "lenet-pytorch" in served_models else "cnn-tensorflow"
    draw_one(page)
    wait_settled(page)
    with page.expect_response(lambda response: f"/v1/models/{other}/activations" in response.url) as answer:
        page.select_option("#model-select", other)
    assert answer.value.ok
    wait_settled(page)
    expect(page.locator("#prediction")).to_have_text("1")
    expect(page.locator("#model-info")).to_contain_text(served_models[other]["architecture"])
    first = served_models[other]["layers"][0]
    maps = page.locator(f"#layers .layer[data-layer='{first['name']}'] [data-testid=feature-maps] img[src^='data:']")
    expect(maps).to_have_count(first["shape"][0])
    expect(page.locator("#layers .layer")).to_have_count(len(served_models[other]["layers"]))


def test_side_by_side_shows_both_frameworks(page: Page, served_models: dict[str, dict[str, Any]]) -> None:
    assert {"cnn-pytorch", "cnn-tensorflow"} <= set(served_models)
    page.check("#side-by-side")
    expect(page.locator("#compare")).to_be_visible()
    draw_zero(page)
    wait_settled(page)
    columns = page.locator("#compare .compare-column[data-model]")
    expect(columns).to_have_count(2)
    assert columns.evaluate_all("cols => cols.map(c => c.dataset.model)") == ["cnn-pytorch", "cnn-tensorflow"]
    for name in ("cnn-pytorch", "cnn-tensorflow"):
        column = f"#compare .compare-column[data-model='{name}']"
        expect(page.locator(f"{column} .compare-prediction")).to_have_text("0")
        assert sum(probabilities(page, f"{column} .probabilities").values()) == pytest.approx(1.0, abs=1e-3)
    page.uncheck("#side-by-side")
    expect(page.locator("#compare")).to_be_hidden()


def test_uploading_a_png_predicts_its_label(
        page: Page, mnist_test_set: tuple[np.ndarray, np.ndarray], tmp_path: Path) -> None:
    images, labels = mnist_test_set
    index = int(np.nonzero(labels == 7)[0][0])
    dark_on_light = 255 - np.asarray(images[index], dtype=np.uint8)
    scaled = np.asarray(Image.fromarray(dark_on_light).resize((112, 112), Image.Resampling.BILINEAR))
    path = tmp_path / "seven.png"
    path.write_bytes(png_bytes(scaled))
    page.set_input_files("#upload", str(path))
    wait_settled(page)
    expect(page.locator("#prediction")).to_have_text(str(int(labels[index])))
    expect(page.locator("#pad-status")).to_contain_text("seven.png")
    assert canvas_pixels(page, "#pad")["lit"] > 280 * 280 / 2  # shown as uploaded: light background


def test_an_error_from_the_service_is_shown(page: Page, tmp_path: Path) -> None:
    path = tmp_path / "not-a-digit.png"
    path.write_bytes(b"these bytes are no image")
    with page.expect_response(lambda response: "/activations" in response.url) as answer:
        page.set_input_files("#upload", str(path))
    assert answer.value.status == 422
    error = page.locator("#error")
    expect(error).to_be_visible()
    expect(error).to_have_attribute("role", "alert")
    expect(error).to_contain_text("422")
    expect(error).to_contain_text("not a readable image")
    expect(page.locator("#app")).to_have_attribute("data-state", "error")

    page.click("#clear")
    draw_one(page)
    wait_settled(page)
    expect(error).to_be_hidden()
    expect(page.locator("#prediction")).to_have_text("1")


def test_an_unreachable_service_is_shown(page: Page) -> None:
    page.route("**/activations*", lambda route: route.abort("connectionrefused"))
    draw_one(page)
    wait_settled(page)
    expect(page.locator("#error")).to_be_visible()
    expect(page.locator("#error")).to_contain_text("unreachable")


def test_phone_screen_and_keyboard(browser: Browser, live_server: str) -> None:
    page, script_errors = open_page(browser, live_server, viewport=PHONE, touch=True)
    assert page.evaluate("() => document.documentElement.scrollWidth") <= PHONE["width"]
    pad = page.locator("#pad").bounding_box()
    assert pad is not None and pad["width"] <= PHONE["width"]
    page.evaluate("""() => { window.pointerTypes = new Set();
        document.querySelector('#pad').addEventListener('pointermove', e => window.pointerTypes.add(e.pointerType)); }""")
    scroll_before = page.evaluate("() => window.scrollY")
    draw_with_touch(page, ONE_STROKE)
    wait_settled(page)
    assert page.evaluate("() => [...window.pointerTypes]") == ["touch"]
    assert page.evaluate("() => window.scrollY") == scroll_before  # the stroke drew; it did not scroll the page
    expect(page.locator("#prediction")).to_have_text("1")
    assert page.evaluate("() => document.documentElement.scrollWidth") <= PHONE["width"]

    unnamed = page.evaluate("""() => [...document.querySelectorAll('button, input, select, canvas#pad')]
        .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')
                      && !el.getAttribute('aria-labelledby') && !el.textContent.trim())
        .map(el => el.id || el.outerHTML.slice(0, 80))""")
    assert unnamed == []

    reached: list[str] = []
    for _ in range(25):
        page.keyboard.press("Tab")
        reached.append(page.evaluate("() => document.activeElement.id"))
    for control in ("model-select", "side-by-side", "pad", "clear", "undo", "upload", "occlusion-patch",
                    "occlusion-stride", "occlusion-target"):
        assert control in reached, f"#{control} is not reachable with Tab: {reached}"
    page.close()
    assert script_errors == []


def test_screenshot_of_a_full_drawn_state(page: Page, artifacts_dir: Path) -> None:
    page.check("#side-by-side")
    draw_zero(page)
    wait_settled(page)
    expect(page.locator("#prediction")).to_have_text("0")
    expect(page.locator("#occlusion")).to_have_attribute("data-drawn", "true")
    page.screenshot(path=str(artifacts_dir / "page.png"), full_page=True)
    docs_screenshot = REPO_ROOT / "docs" / "screenshot.png"
    page.screenshot(path=str(docs_screenshot))
    with Image.open(docs_screenshot) as shot:
        assert shot.size == (DESKTOP["width"], DESKTOP["height"])
