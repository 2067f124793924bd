"""The IDX reader on synthetic and real files, load_split and resolve_data_dir."""

from __future__ import annotations

import gzip
import hashlib
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import mnist_dir
from training import data
from training.data import (
    CONTENT_SHA256,
    DEFAULT_DATA_DIR,
    IMAGES_MAGIC,
    LABELS_MAGIC,
    IdxFormatError,
    load_split,
    read_images,
    read_labels,
    resolve_data_dir,
)

TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def idx_bytes(magic: int, shape: tuple[int, ...], payload: bytes) -> bytes:
    return struct.pack(">I", magic) + struct.pack(f">{len(shape)}I", *shape) + payload


def write_idx(path: Path, content: bytes, compress: bool) -> Path:
    target = path.with_name(path.name + ".gz") if compress else path
    target.write_bytes(gzip.compress(content) if compress else content)
    return target


def sample_images(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, 28, 28), dtype=np.uint8)


@pytest.mark.parametrize("compress", [True, False], ids=["gzipped", "raw"])
def test_reads_well_formed_images_and_labels(tmp_path: Path, compress: bool) -> None:
    images = sample_images(3)
    labels = np.array([0, 9, 4], dtype=np.uint8)
    image_path = write_idx(tmp_path / "images-idx3-ubyte", idx_bytes(IMAGES_MAGIC, images.shape, images.tobytes()), compress)
    label_path = write_idx(tmp_path / "labels-idx1-ubyte", idx_bytes(LABELS_MAGIC, labels.shape, labels.tobytes()), compress)

    read_back_images = read_images(image_path)
    read_back_labels = read_labels(label_path)

    assert read_back_images.dtype == np.uint8 and read_back_images.shape == (3, 28, 28)
    np.testing.assert_array_equal(read_back_images, images)
    np.testing.assert_array_equal(read_back_labels, labels)


def test_empty_label_file_is_valid(tmp_path: Path) -> None:
    path = write_idx(tmp_path / "labels", idx_bytes(LABELS_MAGIC, (0,), b""), compress=False)
    assert read_labels(path).shape == (0,)


@pytest.mark.parametrize(
    ("content", "reader", "message"),
    [
        (idx_bytes(0x00000903, (1, 28, 28), bytes(784)), read_images, "magic number 0x00000903"),
        (idx_bytes(LABELS_MAGIC, (1,), b"\x01"), read_images, "magic number 0x00000801"),
        (idx_bytes(IMAGES_MAGIC, (1, 28, 28), bytes(784)), read_labels, "magic number 0x00000803"),
        (b"\x00\x00\x08", read_labels, "too short"),
        (struct.pack(">III", IMAGES_MAGIC, 2, 28), read_images, "truncated header"),
        (idx_bytes(IMAGES_MAGIC, (3, 28, 28), bytes(2 * 784)), read_images, "file has 1568"),
        (idx_bytes(IMAGES_MAGIC, (1, 28, 28), bytes(784 + 5)), read_images, "file has 789"),
        (idx_bytes(LABELS_MAGIC, (4,), b"\x01\x02"), read_labels, "= 4 bytes of data"),
        (idx_bytes(IMAGES_MAGIC, (2, 27, 28), bytes(2 * 27 * 28)), read_images, "expected 28x28"),
        (idx_bytes(IMAGES_MAGIC, (1, 32, 32), bytes(32 * 32)), read_images, "expected 28x28"),
        (idx_bytes(LABELS_MAGIC, (3,), bytes([1, 10, 2])), read_labels, "label 10 is not a digit"),
    ],
    ids=["unknown-magic", "labels-as-images", "images-as-labels", "too-short", "truncated-header",
         "missing-data", "extra-data", "short-labels", "27x28-images", "32x32-images", "label-10"],
)
@pytest.mark.parametrize("compress", [True, False], ids=["gzipped", "raw"])
def test_rejects_malformed_files(
    tmp_path: Path, content: bytes, reader: Callable[[Path], np.ndarray], message: str, compress: bool
) -> None:
    path = write_idx(tmp_path / "broken-idx", content, compress)
    with pytest.raises(IdxFormatError, match=message):
        reader(path)


def test_load_split_prefers_gz_and_falls_back_to_raw_files(tmp_path: Path) -> None:
    images = sample_images(2)
    labels = np.array([3, 7], dtype=np.uint8)
    write_idx(tmp_path / "t10k-images-idx3-ubyte", idx_bytes(IMAGES_MAGIC, images.shape, images.tobytes()), compress=True)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", idx_bytes(LABELS_MAGIC, labels.shape, labels.tobytes()), compress=False)

    split = load_split("test", tmp_path, download=False)

    assert len(split) == 2
    np.testing.assert_array_equal(split.images, images)
    np.testing.assert_array_equal(split.labels, labels)


def test_load_split_rejects_image_and_label_counts_that_differ(tmp_path: Path) -> None:
    images = sample_images(3)
    labels = np.array([3, 7], dtype=np.uint8)
    write_idx(tmp_path / "t10k-images-idx3-ubyte", idx_bytes(IMAGES_MAGIC, images.shape, images.tobytes()), compress=True)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", idx_bytes(LABELS_MAGIC, labels.shape, labels.tobytes()), compress=True)
    with pytest.raises(IdxFormatError, match="3 images but 2 labels"):
        load_split("test", tmp_path, download=False)


def test_load_split_without_download_names_the_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        load_split("train", tmp_path, download=False)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("split_name", "size", "counts"), [("train", 60_000, TRAIN_COUNTS), ("test", 10_000, TEST_COUNTS)])
def test_load_split_on_the_real_files(split_name: str, size: int, counts: list[int]) -> None:
    split = load_split(split_name, mnist_dir(), download=False)

    assert split.images.shape == (size, 28, 28) and split.images.dtype == np.uint8
    assert split.labels.shape == (size,) and split.labels.dtype == np.uint8
    assert np.bincount(split.labels, minlength=10).tolist() == counts
    assert split.images.max() == 255 and split.images.min() == 0


def test_real_files_match_the_recorded_content_checksums() -> None:
    digests = {}
    for stem, expected in CONTENT_SHA256.items():
        path = next(p for p in (mnist_dir() / f"{stem}.gz", mnist_dir() / stem) if p.exists())
        raw = path.read_bytes()
        content = gzip.decompress(raw) if path.suffix == ".gz" else raw
        digests[stem] = hashlib.sha256(content).digest()
        assert digests[stem].hex() == expected, stem

    combined = hashlib.sha256(b"".join(digests[stem] for stems in data.SPLIT_FILES.values() for stem in stems))
    assert data.dataset_sha256(mnist_dir()) == combined.hexdigest()


def test_resolve_data_dir_prefers_the_argument(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MNIST_DIR", str(tmp_path / "from-env"))
    assert resolve_data_dir(tmp_path / "from-arg") == tmp_path / "from-arg"
    assert resolve_data_dir(str(tmp_path / "as-string")) == tmp_path / "as-string"


def test_resolve_data_dir_uses_mnist_dir_next(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MNIST_DIR", str(tmp_path / "from-env"))
    assert resolve_data_dir(None) == tmp_path / "from-env"
    assert resolve_data_dir("") == tmp_path / "from-env"


def test_resolve_data_dir_defaults_to_data_mnist(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MNIST_DIR", raising=False)
    assert resolve_data_dir(None) == DEFAULT_DATA_DIR
    assert DEFAULT_DATA_DIR == Path(data.__file__).resolve().parent.parent / "data" / "mnist"
