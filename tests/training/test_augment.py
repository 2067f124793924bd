"""training.augment: the transforms do what they say, seeded, on real MNIST digits; presets and settings agree."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from tests.conftest import mnist_dir
from training import augment, data
from training.augment import DEVICES, HANDWRITING, SHIFT_ONLY, Augmentation
from training.common import TrainSettings


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    return data.load_split("test", mnist_dir()).images[:200]


def centre_of_mass(images: np.ndarray) -> np.ndarray:
    return np.array([ndimage.center_of_mass(image.astype(np.float64)) for image in images])


def test_shift_preset_is_version_1s_whole_pixel_shift(digits: np.ndarray) -> None:
    shifted = augment.augment(digits, SHIFT_ONLY, np.random.default_rng(5))
    assert np.array_equal(shifted, augment.random_shift(digits, 2, np.random.default_rng(5)))
    assert not np.array_equal(shifted, digits)
    # whole-pixel shifts keep every grey level
    assert np.array_equal(np.sort(shifted[shifted > 0])[-50:], np.sort(digits[digits > 0])[-50:])


@pytest.mark.parametrize("preset", [HANDWRITING, DEVICES], ids=["handwriting", "devices"])
def test_augmentation_is_seeded_and_leaves_its_input_alone(digits: np.ndarray, preset: Augmentation) -> None:
    before = digits.copy()
    first = augment.augment(digits, preset, np.random.default_rng(1))
    again = augment.augment(digits, preset, np.random.default_rng(1))
    other = augment.augment(digits, preset, np.random.default_rng(2))

    assert np.array_equal(digits, before)
    assert first.dtype == np.uint8 and first.shape == digits.shape
    assert np.array_equal(first, again) and not np.array_equal(first, other)
    changed = np.mean(np.abs(first.astype(np.int16) - digits.astype(np.int16)) > 10, axis=(1, 2))
    assert np.all(changed > 0.0)
    # a digit stays a digit: about the same ink, most of it inside the frame
    ratio = first.sum(axis=(1, 2)) / digits.sum(axis=(1, 2))
    widest = 1.25 if preset is HANDWRITING else 2.0  # thicker pens, blur and noise add ink
    assert 0.8 < np.median(ratio) < widest and ratio.min() > 0.35


def test_identity_warp_and_a_quarter_turn(digits: np.ndarray) -> None:
    n = len(digits)
    images = digits.astype(np.float32)
    identity = augment.warp(images, augment.affine_inverse(np.zeros(n), np.ones(n), np.zeros(n)), np.zeros((n, 2)))
    np.testing.assert_allclose(identity, images, atol=1e-3)

    turned = augment.warp(images, augment.affine_inverse(np.full(n, 90.0), np.ones(n), np.zeros(n)), np.zeros((n, 2)))
    # about the centre of the 28x28 grid a quarter turn is exact: one of the two rot90 directions
    matches = [np.allclose(turned, np.rot90(images, k, axes=(1, 2)), atol=1e-2) for k in (1, 3)]
    assert any(matches)


def test_scale_and_shift_move_ink_as_asked(digits: np.ndarray) -> None:
    n = len(digits)
    images = digits.astype(np.float32)
    half = augment.warp(images, augment.affine_inverse(np.zeros(n), np.full(n, 0.5), np.zeros(n)), np.zeros((n, 2)))
    assert np.median(half.sum(axis=(1, 2)) / images.sum(axis=(1, 2))) == pytest.approx(0.25, abs=0.03)

    moved = augment.warp(images, augment.affine_inverse(np.zeros(n), np.ones(n), np.zeros(n)), np.tile([3.0, -2.0], (n, 1)))
    shift = centre_of_mass(moved) - centre_of_mass(images)
    np.testing.assert_allclose(np.median(shift, axis=0), [3.0, -2.0], atol=0.1)


def test_stroke_change_widens_and_thins(digits: np.ndarray) -> None:
    images = digits.astype(np.float32)
    n = len(images)
    footprint = augment.CROSS[None]
    once = ndimage.grey_dilation(images, footprint=footprint)
    np.testing.assert_array_equal(augment.change_stroke(images, np.full(n, 2.0)), once)
    twice = ndimage.grey_dilation(once, footprint=footprint)
    np.testing.assert_array_equal(augment.change_stroke(images, np.full(n, 4.0)), twice)
    np.testing.assert_allclose(augment.change_stroke(images, np.full(n, 3.0)), (once + twice) / 2, atol=1e-3)
    ink = images.sum(axis=(1, 2))
    assert np.all(augment.change_stroke(images, np.full(n, 1.0)).sum(axis=(1, 2)) > ink)
    assert np.all(augment.change_stroke(images, np.full(n, -1.0)).sum(axis=(1, 2)) < ink)
    np.testing.assert_array_equal(augment.change_stroke(images, np.zeros(n)), images)
    # each image its own change, either way
    mixed = augment.change_stroke(images[:3], np.array([-2.0, 0.0, 4.0]))
    np.testing.assert_array_equal(mixed[0], ndimage.grey_erosion(images[:1], footprint=footprint)[0])
    np.testing.assert_array_equal(mixed[1:], np.stack([images[1], twice[2]]))


def test_width_changes_the_horizontal_extent_only(digits: np.ndarray) -> None:
    n = len(digits)
    images = digits.astype(np.float32)
    narrow = augment.warp(images, augment.affine_inverse(np.zeros(n), np.ones(n), np.zeros(n), np.full(n, 0.6)),
                          np.zeros((n, 2)))

    def spread(batch: np.ndarray, axis: int) -> np.ndarray:
        profile = batch.sum(axis=axis)
        position = np.arange(batch.shape[1])
        mean = (profile * position).sum(axis=1) / profile.sum(axis=1)
        return np.sqrt((profile * (position - mean[:, None]) ** 2).sum(axis=1) / profile.sum(axis=1))

    assert np.median(spread(narrow, 1) / spread(images, 1)) == pytest.approx(0.6, abs=0.03)  # columns
    assert np.median(spread(narrow, 2) / spread(images, 2)) == pytest.approx(1.0, abs=0.02)  # rows


def test_elastic_fields_follow_simard(digits: np.ndarray) -> None:
    settings = Augmentation(elastic_alpha=34, elastic_sigma=4, elastic_probability=0.5)
    fields = augment.elastic_fields(400, 28, settings, np.random.default_rng(0))
    moved = np.abs(fields).max(axis=(1, 2, 3)) > 0
    assert 0.4 < moved.mean() < 0.6
    # smooth: neighbouring displacements differ far less than the displacements themselves
    centre = fields[moved][:, :, 8:20, 8:20]
    assert np.abs(np.diff(centre, axis=3)).mean() < 0.25 * np.abs(centre).mean()
    assert 0.3 < np.abs(centre).mean() < 3.0


def test_settings_presets_and_overrides_reach_the_augmentation() -> None:
    settings = TrainSettings()
    assert settings.augment == "devices" and settings.augmentation() == DEVICES
    assert all(hasattr(settings, f"augment_{name}") for name in augment.AUGMENTATION_RANGES)
    settings.use_preset("handwriting")
    assert settings.augmentation() == HANDWRITING and not HANDWRITING.digitised
    settings.use_preset("shift")
    assert settings.augmentation() == SHIFT_ONLY and settings.augmentation().shift_only
    assert settings.public()["augment_rotation"] == 0
    settings.augment_rotation = 5
    assert settings.augmentation() == Augmentation(shift=2, rotation=5) and not settings.augmentation().shift_only
