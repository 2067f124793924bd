"""The input check: its framing geometry reproduces the server's own preprocessing exactly, and its
warnings fire on blank and non-digit drawings but (almost) never on MNIST digits."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from service import input_check
from service.preprocess import mnist_style
from tests.measure_input_check import NON_DIGITS, SIDE, blob, dots, mnist_digits, scribble

NEUTRAL = np.full(10, 0.1)  # a model's answer that plays no part in the shape tests
SURE = np.eye(10)[3]


def gray(image: Image.Image) -> np.ndarray:
    return np.asarray(image, np.float32) / 255.0


def codes(image: Image.Image, probabilities: np.ndarray = SURE) -> set[str]:
    framing = input_check.frame(gray(image))
    return {warning.code for warning in input_check.warnings(input_check.measure(framing, probabilities))}


@pytest.fixture(scope="module")
def digits(mnist_test_set: tuple[np.ndarray, np.ndarray]) -> list[Image.Image]:
    return mnist_digits(120, np.random.default_rng(1))


def test_the_framing_reproduces_the_servers_preprocessing(digits: list[Image.Image]) -> None:
    rng = np.random.default_rng(2)
    inputs = [gray(image) for image in digits[:40]]
    inputs += [gray(make(rng)) for make in NON_DIGITS.values()]
    dark_on_light = 1.0 - gray(digits[0])
    shaded = np.clip(dark_on_light * np.linspace(0.6, 1.0, SIDE)[None, :], 0, 1)  # uneven light
    wide = np.asarray(digits[1].resize((400, 160)), np.float32) / 255.0  # not square
    for image in [*inputs, dark_on_light, shaded, wide]:
        framing = input_check.frame(image)
        np.testing.assert_array_equal(framing.input, mnist_style(image))
        if framing.crop is None:
            continue
        top, left, bottom, right = framing.crop
        assert 0 <= top <= bottom < framing.working_shape[0] and 0 <= left <= right < framing.working_shape[1]
        assert max(framing.placed[2], framing.placed[3]) == 20  # the longer side scaled to 20 px
        assert framing.scale == pytest.approx(20 / max(bottom - top + 1, right - left + 1))
        shifted_centre = np.array(framing.centre_of_mass) + np.array(framing.shift)
        assert np.all(np.abs(shifted_centre - 13.5) <= 1.0) or framing.shift != (0, 0)


def test_a_blank_input_is_blank() -> None:
    found = input_check.measure(input_check.frame(np.ones((64, 64), np.float32)), NEUTRAL)
    assert [warning.code for warning in input_check.warnings(found)] == ["blank"]


def test_shapes_that_are_not_digits_are_flagged() -> None:
    rng = np.random.default_rng(3)
    assert "solid" in codes(blob(rng))
    specks = np.zeros((28, 28), np.float32)  # a 28x28 input of six separate specks (sent without preprocessing)
    for y, x in ((5, 5), (5, 20), (12, 12), (20, 5), (20, 20), (24, 12)):
        specks[y : y + 2, x : x + 2] = 1.0
    found = input_check.measure(input_check.unprocessed(specks), SURE)
    assert found.pieces == 6 and "pieces" in {warning.code for warning in input_check.warnings(found)}
    cross = np.zeros((28, 28), np.float32)  # ink from edge to edge (a 28x28 input sent as it is)
    cross[13:15, :] = cross[:, 13:15] = 1.0
    found = input_check.measure(input_check.unprocessed(cross), SURE)
    assert found.touches_every_border and "touches_every_border" in {w.code for w in input_check.warnings(found)}
    assert "unsure" in codes(scribble(rng), probabilities=np.array([0.5, 0.4, *[0.0125] * 8]))
    assert codes(dots(np.random.default_rng(4)))  # scattered dots trip at least one test


def test_mnist_digits_rarely_warn(digits: list[Image.Image]) -> None:
    """Measured on 1,000 MNIST test digits (tests/measure_input_check.py): the shape tests fire on
    0.2 % of them. The confidence test needs a model and is measured there."""
    warned = [image for image in digits if codes(image) - {"unsure"}]
    assert len(warned) <= 2, len(warned)
