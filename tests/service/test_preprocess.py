"""Preprocessing for photos: the numpy morphology, the ink map under uneven light, the choice of
the digit's components, and the MNIST-style framing kept as it was on clean images."""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image, ImageDraw

from service.imaging.mnist_style import SIZE, WORKING_SIDE, frame_digit, mnist_style, to_working_size
from service.imaging.morphology import box_blur, label, max_filter, min_filter, opening, reconstruct
from service.imaging.photo import ink_map, select_digit
from training.perturb_photos import EXIF_ORIENTATION_TAG, GENERATORS, generate

PROPERTIES = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
small_images = hnp.arrays(np.float32, st.tuples(st.integers(1, 24), st.integers(1, 24)), elements=st.floats(0, 1, width=32))


def brute_force(values: np.ndarray, window: int, reduce: str) -> np.ndarray:
    out = np.empty_like(values)
    before = window // 2
    for row in range(values.shape[0]):
        for col in range(values.shape[1]):
            patch = values[max(0, row - before) : row - before + window, max(0, col - before) : col - before + window]
            out[row, col] = getattr(patch, reduce)()
    return out


@PROPERTIES
@given(small_images, st.integers(1, 30))
def test_min_max_and_box_filters_match_brute_force(values: np.ndarray, window: int) -> None:
    np.testing.assert_array_equal(max_filter(values, window), brute_force(values, window, "max"))
    np.testing.assert_array_equal(min_filter(values, window), brute_force(values, window, "min"))
    np.testing.assert_allclose(box_blur(values, window), brute_force(values, window, "mean"), atol=1e-5)


@PROPERTIES
@given(small_images, st.integers(1, 12))
def test_opening_stays_below_the_image(values: np.ndarray, window: int) -> None:
    assert (opening(values, window) <= values).all()


@PROPERTIES
@given(st.integers(20, 60), st.integers(20, 60), st.floats(-0.01, 0.01), st.floats(-0.01, 0.01), st.integers(3, 19),
       st.integers(0, 59), st.floats(0.1, 0.5))
def test_opening_keeps_ramps_and_steps_and_removes_narrow_lines(height: int, width: int, slope_y: float, slope_x: float,
                                                                  window: int, step_at: int, step: float) -> None:
    """What the background estimate relies on: the light's ramps and a shadow's edge survive to the
    border; a bright line narrower than the window (a stroke, in the ink-bright image) does not."""
    ys, xs = np.indices((height, width), dtype=np.float32)
    light = 0.5 + slope_y * ys + slope_x * xs + np.where(xs >= step_at, step, 0.0)
    # exact, but where the step and the ramp make a ridge, or the line was: within a window's slope
    slack = (abs(slope_x) + abs(slope_y)) * window + 1e-6
    np.testing.assert_allclose(opening(light.astype(np.float32), window), light, atol=slack)
    assume(abs(width // 2 - step_at) > window)  # a line against the step would be part of its plateau
    lined = light.copy()
    lined[:, width // 2 : width // 2 + (window - 1) // 2] += 0.3
    np.testing.assert_allclose(opening(lined.astype(np.float32), window), light, atol=slack)


def flood_labels(mask: np.ndarray) -> list[set[tuple[int, int]]]:
    seen, parts = set(), []
    for start in zip(*np.nonzero(mask)):
        if start in seen:
            continue
        part, todo = set(), [start]
        while todo:
            row, col = todo.pop()
            if (row, col) in part:
                continue
            part.add((row, col))
            for dr in (-1, 0, 1):
                for dc in (-1, 0, 1):
                    r, c = row + dr, col + dc
                    if 0 <= r < mask.shape[0] and 0 <= c < mask.shape[1] and mask[r, c] and (r, c) not in part:
                        todo.append((r, c))
        seen |= part
        parts.append(part)
    return parts


@PROPERTIES
@given(hnp.arrays(np.bool_, st.tuples(st.integers(1, 20), st.integers(1, 20))))
def test_label_finds_the_8_connected_components(mask: np.ndarray) -> None:
    labels, count = label(mask)
    expected = flood_labels(mask)
    assert count == len(expected)
    assert ((labels > 0) == mask).all()
    found = [set(zip(*np.nonzero(labels == k))) for k in range(1, count + 1)]
    assert sorted(map(sorted, found)) == sorted(map(sorted, expected))


@PROPERTIES
@given(small_images, small_images)
def test_reconstruction_is_the_fixed_point_of_geodesic_dilation(mask: np.ndarray, marker: np.ndarray) -> None:
    marker = marker[: mask.shape[0], : mask.shape[1]]
    mask = mask[: marker.shape[0], : marker.shape[1]]
    rebuilt = reconstruct(marker, mask)
    assert (rebuilt <= mask).all() and (rebuilt >= np.minimum(marker, mask)).all()
    np.testing.assert_array_equal(np.minimum(max_filter(rebuilt, 3), mask), rebuilt)


# ---- the ink map under uneven light ----------------------------------------------------------

def paper_with_digit(light: np.ndarray, digit: bool = True, ink: float = 0.1, paper: float = 0.9) -> np.ndarray:
    """Reflectance x illumination: a '7' (bar and stem, strokes 8 px) on paper, lit by `light`."""
    height, width = light.shape
    reflectance = np.full((height, width), paper, np.float32)
    if digit:
        top, left = height // 3, width // 3
        reflectance[top : top + 8, left : left + 60] = ink
        reflectance[top : top + 80, left + 52 : left + 60] = ink
    return reflectance * light


def shadow_band(height: int, width: int, rows: slice, depth: float = 0.45) -> np.ndarray:
    light = np.ones((height, width), np.float32)
    light[rows] = depth
    return light


@pytest.mark.parametrize("light", [
    np.ones((240, 300), np.float32),
    np.tile(np.linspace(1.0, 0.45, 300, dtype=np.float32), (240, 1)),  # a gradient
    shadow_band(240, 300, np.s_[:, 200:], 0.4).astype(np.float32),  # a shadow over the right side
    shadow_band(240, 300, np.s_[200:], 0.5),  # a band of shadow along the bottom, thinner than the window
], ids=["even", "gradient", "side-shadow", "bottom-band"])
def test_light_is_not_ink(light: np.ndarray) -> None:
    """Without a digit the ink map is (near) empty; with one, it is the digit, at an even strength."""
    empty, _ = ink_map(paper_with_digit(light, digit=False))
    assert select_digit(empty).max() <= 0.1 if empty.max() > 0 else True
    ink, uneven = ink_map(paper_with_digit(light))
    digit = select_digit(ink, cut_frame_bands=uneven)
    strokes = paper_with_digit(np.ones_like(light)) < 0.5
    assert digit[strokes].mean() > 0.7
    assert digit[~strokes].max() < 0.5 and digit[~strokes].mean() < 0.02


def test_polarity_either_way() -> None:
    dark_on_light = paper_with_digit(np.ones((120, 160), np.float32))
    for gray in (dark_on_light, 1.0 - dark_on_light):
        ink, _ = ink_map(gray)
        assert ink[dark_on_light < 0.5].mean() > 0.85 and ink[dark_on_light > 0.5].max() < 0.05


def test_light_ink_under_uneven_light_with_strong_evidence() -> None:
    """A chalk digit on a dark board lit from one side: light ink departs far more than the light."""
    light = np.tile(np.linspace(1.0, 0.4, 300, dtype=np.float32), (240, 1))
    board = 1.0 - paper_with_digit(np.ones_like(light), ink=0.1, paper=0.7)  # light strokes on 0.3
    ink, uneven = ink_map(board * light)
    assert uneven
    strokes = board > 0.5
    # light ink is measured against the board by difference, so its strength follows the light
    assert np.quantile(ink[strokes], 0.05) > 0.15 and ink[~strokes].mean() < 0.02


def test_the_digit_keeps_its_strokes_and_drops_specks() -> None:
    """A 4 written in two strokes (two components) stays whole; dust far away is dropped."""
    image = Image.new("L", (200, 200), 0)
    draw = ImageDraw.Draw(image)
    draw.line([(60, 40), (45, 110), (90, 110)], fill=255, width=8)  # the first stroke: down, then across
    draw.line([(100, 60), (100, 170)], fill=255, width=8)  # the second stroke, apart from the first
    draw.ellipse([(180, 180), (185, 185)], fill=255)  # a speck
    ink = np.asarray(image, np.float32) / 255
    assert label(ink > 0.5)[1] == 3
    digit = select_digit(ink)
    assert digit[40:172, 40:125].sum() == pytest.approx(ink[40:172, 40:125].sum())
    assert digit[175:, 175:].max() == 0.0


def test_a_band_of_shadow_touching_the_digit_is_cut_off() -> None:
    """The issue's case: a shadow along one side became a bright bar that pushed the digit aside."""
    light = shadow_band(240, 300, np.s_[:50], 0.45)
    gray = paper_with_digit(light)
    gray[40:90, 150:158] = 0.1 * 0.45  # the stem reaches up into the shadow
    framed = mnist_style(gray)
    ink, uneven = ink_map(gray)
    assert uneven
    assert select_digit(ink, cut_frame_bands=True)[:30].max() < 0.3  # the band is gone
    ys, xs = np.indices(framed.shape)
    assert abs((xs * framed).sum() / framed.sum() - 13.5) < 1.0 and abs((ys * framed).sum() / framed.sum() - 13.5) < 1.0


# ---- MNIST-style framing, as before, on clean images ----------------------------------------

def test_clean_mnist_digits_are_framed_exactly_as_before(mnist_test_set) -> None:
    """For a clean image (even background, one digit) the new steps add nothing: the result is the
    MNIST-style framing of the gray image itself, which is what preprocessing always returned."""
    images = mnist_test_set[0][:300].astype(np.float32) / 255
    same = [np.array_equal(mnist_style(image), frame_digit(image)) for image in images]
    assert np.mean(same) >= 0.99


def test_big_arrays_are_reduced_to_the_working_size() -> None:
    gray = np.ones((3000, 4000), np.float32)
    gray[1000:2000, 1800:1900] = 0.0
    assert max(to_working_size(gray).shape) == WORKING_SIDE
    framed = mnist_style(gray)
    assert framed.shape == (SIZE, SIZE) and framed.max() == pytest.approx(1.0, abs=0.05)


# ---- the photo generators ---------------------------------------------------------------------

@pytest.mark.parametrize("name", GENERATORS)
def test_generators_are_seeded_and_give_files(mnist_test_set, name: str) -> None:
    digits = mnist_test_set[0][:4]
    files = generate(name, digits, seed=3)
    assert files == generate(name, digits, seed=3) and files != generate(name, digits, seed=4)
    opened = [Image.open(io.BytesIO(data)) for data in files]
    expected = {"scan": ("JPEG", "RGB"), "shaded": ("JPEG", "RGB"), "shadow": ("JPEG", "RGB"), "exif": ("JPEG", "RGB"),
                "png16": ("PNG", "I;16"), "float_tiff": ("TIFF", "F")}[name]
    assert all((image.format, image.mode) == expected for image in opened)
    if name == "exif":
        assert {image.getexif()[EXIF_ORIENTATION_TAG] for image in opened} <= {3, 6, 8}


def test_generators_refuse_what_is_not_mnist() -> None:
    with pytest.raises(ValueError, match="uint8"):
        generate("scan", np.zeros((2, 28, 28), np.float32))
    with pytest.raises(KeyError, match="unknown generator"):
        generate("fog", np.zeros((2, 28, 28), np.uint8))
