"""The page's details against a real server: a unit inspected (kernels, receptive field,
contributions that add up), the Why map for a picked digit checked against finite differences of
the ONNX model, absolute colour scales with legends, occlusion, the preprocessing steps and the
warnings for blank or non-digit input, and the two frameworks compared."""

from __future__ import annotations

import base64
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image
from playwright.sync_api import Browser, Page, expect

from contract.spec import LOGITS
from tests.conftest import model_file
from tests.page_driver import SEVEN, draw, draw_one, draw_zero, open_page, png_bytes, wait_settled

pytestmark = pytest.mark.slow

RED_OVER_BLUE = """(canvas) => {
  const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
  let red = 0, blue = 0;
  for (let i = 0; i < data.length; i += 4) {
    if (data[i] > data[i + 2] + 60) red += 1;
    if (data[i + 2] > data[i] + 60) blue += 1;
  }
  return {red, blue};
}"""


@pytest.fixture
def page(browser: Browser, live_server: str) -> Iterator[Page]:
    page, console = open_page(browser, live_server)
    yield page
    page.close()
    assert console.unexpected() == [], f"console errors: {console.unexpected()}"


def test_a_feature_map_inspected(page: Page) -> None:
    draw_zero(page)
    wait_settled(page)
    with page.expect_response(lambda response: "/inspect?" in response.url) as answer:
        page.locator("#layers .layer[data-layer='conv3'] .tile").nth(5).click()
    result: dict[str, Any] = answer.value.json()
    wait_settled(page)
    expect(page.locator("#tab-unit")).to_have_attribute("aria-selected", "true")
    expect(page.locator("[data-testid=unit-title]")).to_contain_text("conv3 channel 5 at")
    expect(page.locator("#layers .layer[data-layer='conv3'] .tile[aria-selected=true]")).to_have_attribute("data-channel", "5")
    # the kernels of conv3's channel 5, one per channel of pool1, on one diverging scale with a legend
    assert result["kernels"]["shape"] == [32, 3, 3] and result["input_layer"] == "pool1"
    expect(page.locator("#unit-body .kernel-item")).to_have_count(32)
    expect(page.locator("#unit-body .legend").first).to_have_attribute("data-scale", "fitted")
    # weights x activations: the contributions and the bias add up to the unit's weighted sum
    total = sum(item["value"] for item in result["contributions"]) + result["bias"]
    assert total == pytest.approx(result["pre_activation"], rel=1e-4, abs=1e-4)
    strongest = page.locator("#unit-body [data-testid=contributions] li")
    expect(strongest).to_have_count(6)
    assert int(strongest.first.get_attribute("data-channel")) == result["contributions"][0]["channel"]
    expect(strongest.first.locator("img")).to_have_attribute("src", re.compile(r"^data:image/png"))
    field = result["field"]
    assert field["bottom"] - field["top"] <= 9 and field["right"] - field["left"] <= 9  # conv3 sees 10x10 pixels at most
    expect(page.locator("[data-testid=unit-field]")).to_have_attribute("data-drawn", "true")

    with page.expect_response(lambda response: "/inspect?" in response.url and "at=" in response.url) as moved:
        page.locator("[data-testid=unit-map]").click(position={"x": 8, "y": 8})  # a corner of the 14x14 map
    assert (moved.value.json()["unit"]["y"], moved.value.json()["unit"]["x"]) == (1, 1)


def test_units_are_inspected_with_the_keyboard(page: Page) -> None:
    draw_one(page)
    wait_settled(page)
    conv1 = page.locator("#layers .layer[data-layer='conv1'] [role=listbox]")
    conv1.focus()
    page.keyboard.press("ArrowRight")
    expect(conv1).to_have_attribute("aria-activedescendant", "map-conv1-1")
    with page.expect_response(lambda response: "layer=conv1&unit=1" in response.url):
        page.keyboard.press("Enter")
    wait_settled(page)
    expect(page.locator("[data-testid=unit-title]")).to_contain_text("conv1 channel 1")
    expect(page.locator("#unit-body .kernel-item")).to_have_count(1)  # conv1 reads the input alone

    fc1 = page.locator("#layers .layer[data-layer='fc1'] [role=slider]")
    fc1.focus()
    page.keyboard.press("End")
    last = int(fc1.get_attribute("aria-valuemax"))
    expect(fc1).to_have_attribute("aria-valuenow", str(last))
    with page.expect_response(lambda response: f"layer=fc1&unit={last}" in response.url) as answer:
        page.keyboard.press("Enter")
    wait_settled(page)
    expect(page.locator("[data-testid=unit-title]")).to_contain_text(f"fc1 unit {last}")
    kernels = answer.value.json()["kernels"]["shape"]
    assert len(kernels) == 3 and answer.value.json()["input_layer"].startswith("pool")  # fc1's weights as maps


def test_why_a_digit_and_not_another_matches_finite_differences(page: Page) -> None:
    """Pick 7 in the bars and 1 as the other digit: the page draws the server's map for
    logit(7) - logit(1), and that map is the derivative ONNX Runtime's own model shows when its
    input pixels are nudged (central differences on the 150 pixels that matter most and 50 others)."""
    draw(page, SEVEN, steps=6)
    wait_settled(page)
    page.locator("#probabilities .prob[data-digit='7']").click()
    wait_settled(page)
    with page.expect_response(lambda response: "/attribution?" in response.url and "versus=1" in response.url) as answer:
        page.select_option("#attribution-versus", "1")
    wait_settled(page)
    result = answer.value.json()
    canvas = page.locator("#attribution")
    expect(canvas).to_have_attribute("data-target", "7")
    expect(canvas).to_have_attribute("data-versus", "1")
    expect(page.locator("#attribution-caption")).to_contain_text("Why 7 and not 1")
    legend = page.locator("#attribution-legend")
    expect(legend).to_have_attribute("data-scale", "absolute")
    expect(legend).to_have_attribute("data-limit", "5")
    assert result["exact"] is True and result["note"] is None

    session = ort.InferenceSession(str(model_file(result["model"], result["version"])), providers=["CPUExecutionProvider"])
    image = np.asarray(result["input"], np.float32)
    saliency = np.asarray(result["maps"]["saliency"]["values"], np.float64)
    rng = np.random.default_rng(0)
    chosen = np.unique(np.concatenate([np.argsort(-np.abs(saliency).ravel())[:150], rng.choice(784, 50, replace=False)]))
    eps = 3e-3
    batch = np.repeat(image[None], 2 * len(chosen), axis=0)
    for row, pixel in enumerate(chosen):
        batch[row].flat[pixel] += eps
        batch[len(chosen) + row].flat[pixel] -= eps
    logits = session.run([LOGITS], {"image": batch[:, None]})[0].astype(np.float64)
    objective = logits[:, 7] - logits[:, 1]
    estimate = (objective[: len(chosen)] - objective[len(chosen):]) / (2 * eps)
    computed = saliency.ravel()[chosen]
    assert np.corrcoef(estimate, computed)[0, 1] > 0.99
    assert np.linalg.norm(estimate - computed) / np.linalg.norm(estimate) < 0.15

    # drawn on the signed scale: red where the map is positive, blue where it is negative
    page.select_option("#attribution-method", "saliency")
    colours = canvas.evaluate(RED_OVER_BLUE)
    assert colours["red"] > 0 and colours["blue"] > 0
    for method in ("gradient_x_input", "hires_cam", "grad_cam"):
        page.select_option("#attribution-method", method)
        expect(canvas).to_have_attribute("data-method", method)
    page.select_option("#attribution-scale", "fitted")
    expect(legend).to_have_attribute("data-scale", "fitted")


def test_occlusion_on_the_absolute_probability_scale(page: Page) -> None:
    draw_one(page)
    wait_settled(page)
    page.click("#tab-occlusion")
    wait_settled(page)
    occlusion = page.locator("#occlusion")
    expect(occlusion).to_have_attribute("data-target", "1")
    legend = page.locator("#occlusion-legend")
    expect(legend).to_have_attribute("data-scale", "absolute")
    expect(legend).to_have_attribute("data-limit", "1")
    expect(page.locator("#occlusion-caption")).to_contain_text("p(1)")
    page.focus("#occlusion-patch")
    page.keyboard.press("ArrowRight")  # patch 5 -> 6
    expect(occlusion).to_have_attribute("data-patch", "6", timeout=30_000)


def test_the_preprocessing_steps_are_shown(page: Page) -> None:
    draw_one(page)
    wait_settled(page)
    steps = page.locator("#steps .step")
    expect(steps).to_have_count(3)
    expect(steps.nth(0)).to_contain_text("crop")
    expect(steps.nth(1)).to_contain_text("into 20 px")
    expect(steps.nth(2)).to_contain_text("moved")
    assert steps.locator("canvas").evaluate_all("cs => cs.every(c => c.dataset.drawn === 'true')")
    expect(page.locator("#warnings .warning")).to_have_count(0)


def test_blank_and_non_digit_inputs_are_flagged_without_hiding_the_prediction(page: Page, tmp_path: Path) -> None:
    blank = tmp_path / "blank.png"
    blank.write_bytes(png_bytes(np.full((64, 64), 255, np.uint8)))
    page.set_input_files("#upload", str(blank))
    wait_settled(page)
    expect(page.locator("#warnings")).to_have_attribute("data-codes", "blank")
    expect(page.locator("#prediction")).to_have_text(re.compile(r"^\d$"))

    blob = tmp_path / "blob.png"  # a filled blob, as a scribble that fills a shape ends up
    yy, xx = np.mgrid[:280, :280]
    blob.write_bytes(png_bytes(np.where(((yy - 140) / 100) ** 2 + ((xx - 140) / 70) ** 2 <= 1, 255, 0).astype(np.uint8)))
    page.set_input_files("#upload", str(blob))
    wait_settled(page)
    expect(page.locator("#warnings")).to_have_attribute("data-codes", re.compile(r"\bsolid\b"))
    expect(page.locator("#warnings .warning").first).to_contain_text("thicker than handwriting")
    expect(page.locator("#prediction")).to_have_text(re.compile(r"^\d$"))


def test_strokes_over_an_upload_are_sent_at_the_photos_aspect(page: Page, tmp_path: Path,
                                                               mnist_test_set: tuple[np.ndarray, np.ndarray]) -> None:
    """A wide photo of a dark digit on light paper, and a stroke drawn over it on the square pad: the
    page sends the photo with the stroke at the photo's own size and aspect, not the pad's
    letterboxed square (whose black bars the server would take for ink or paper)."""
    images, labels = mnist_test_set
    paper = np.full((200, 400), 235, np.uint8)
    paper[40:152, 144:256] = 255 - np.kron(images[0], np.ones((4, 4), np.uint8)) * 0.9
    photo = tmp_path / "wide.png"
    photo.write_bytes(png_bytes(paper))
    page.set_input_files("#upload", str(photo))
    wait_settled(page)
    expect(page.locator("#prediction")).to_have_text(str(int(labels[0])))
    with page.expect_request(lambda request: "/activations" in request.url) as sent:
        draw(page, [(0.1, 0.45), (0.2, 0.45)], steps=2)  # a short dash on the paper, away from the digit
    encoded = json.loads(sent.value.post_data or "{}")["image_base64"]
    with Image.open(io.BytesIO(base64.b64decode(encoded))) as composite:
        assert composite.size == (400, 200)
        pixels = np.asarray(composite.convert("L"))
    assert pixels[:, :10].mean() > 200  # the paper's own edge, no black letterbox bar
    assert pixels[90:110, 40:80].min() < 60  # the dash, dark ink on the light paper
    wait_settled(page)
    expect(page.locator("#error")).to_be_hidden()


def test_the_two_frameworks_compared(page: Page) -> None:
    draw_zero(page)
    wait_settled(page)
    with page.expect_response(lambda response: "/v1/compare?" in response.url) as answer:
        page.click("#tab-frameworks")
    wait_settled(page)
    result = answer.value.json()
    assert [model["framework"] for model in result["models"]] == ["pytorch", "tensorflow"]
    expect(page.locator("#compare-body")).to_have_attribute("data-models", "cnn-pytorch,cnn-tensorflow")
    expect(page.locator("[data-testid=compare-head]")).to_contain_text("both say 0")
    expect(page.locator("[data-testid=prob-diffs] .prob-diff")).to_have_count(10)
    rows = page.locator("[data-testid=layer-agreement] .agreement")
    expect(rows).to_have_count(len(result["layers"]))
    spatial = [layer for layer in result["layers"] if layer["agreement"] is not None]
    assert spatial and all(0.0 < layer["agreement"] <= 1.0 for layer in spatial)
    flatten = next(layer for layer in result["layers"] if layer["name"] == "flatten")
    pool = next(layer for layer in result["layers"] if layer["name"] == "pool2")
    assert flatten["agreement"] == pytest.approx(pool["agreement"])  # the same values once the layouts are aligned
    for testid in ("saliency-a", "saliency-b", "saliency-difference"):
        expect(page.locator(f"[data-testid={testid}]")).to_have_attribute("data-drawn", "true")
