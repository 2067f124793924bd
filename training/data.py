"""MNIST in its original IDX format: reading, locating, downloading and checksumming."""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import struct
import sys
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA_DIR = REPO_ROOT / "data" / "mnist"

IDX_UBYTE = 0x08
IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801
IMAGE_SIZE = 28

SPLIT_FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
SPLIT_SIZES = {"train": 60_000, "test": 10_000}

# SHA-256 of the decompressed IDX content: the same whichever mirror or compressor a copy came from.
CONTENT_SHA256: dict[str, str] = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}

MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)


class IdxFormatError(ValueError):
    """An IDX file whose header or size does not describe the data it holds."""


class DownloadError(RuntimeError):
    """No mirror delivered a file with the expected checksum."""


@dataclass(frozen=True)
class MnistSplit:
    images: np.ndarray  # uint8 [n, 28, 28]
    labels: np.ndarray  # uint8 [n]

    def __len__(self) -> int:
        return len(self.labels)


def _open_bytes(path: Path) -> bytes:
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        return gzip.decompress(raw)
    return raw


def parse_idx(content: bytes, *, expected_magic: int, source: str = "<bytes>") -> np.ndarray:
    """Parse IDX content (ubyte data only, as MNIST uses) and check magic, dimensions and size."""
    if len(content) < 8:
        raise IdxFormatError(f"{source}: {len(content)} bytes is too short for an IDX header")
    (magic,) = struct.unpack(">I", content[:4])
    if magic != expected_magic:
        raise IdxFormatError(f"{source}: magic number 0x{magic:08x}, expected 0x{expected_magic:08x}")
    ndim = magic & 0xFF
    header_size = 4 + 4 * ndim
    if len(content) < header_size:
        raise IdxFormatError(f"{source}: truncated header ({len(content)} bytes, {ndim} dimensions)")
    shape = struct.unpack(f">{ndim}I", content[4:header_size])
    expected = int(np.prod(shape, dtype=np.int64))
    actual = len(content) - header_size
    if actual != expected:
        raise IdxFormatError(f"{source}: header declares {shape} = {expected} bytes of data, file has {actual}")
    return np.frombuffer(content, dtype=np.uint8, offset=header_size).reshape(shape)


def read_images(path: Path) -> np.ndarray:
    images = parse_idx(_open_bytes(path), expected_magic=IMAGES_MAGIC, source=str(path))
    if images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise IdxFormatError(f"{path}: images are {images.shape[1:]}, expected 28x28")
    return images


def read_labels(path: Path) -> np.ndarray:
    labels = parse_idx(_open_bytes(path), expected_magic=LABELS_MAGIC, source=str(path))
    if labels.size and labels.max() > 9:
        raise IdxFormatError(f"{path}: label {int(labels.max())} is not a digit")
    return labels


def resolve_data_dir(data_dir: str | Path | None = None) -> Path:
    """`--data-dir`, else `MNIST_DIR`, else `data/mnist` under the repo."""
    if data_dir:
        return Path(data_dir)
    if env := os.environ.get("MNIST_DIR"):
        return Path(env)
    return DEFAULT_DATA_DIR


def _find_file(data_dir: Path, stem: str) -> Path | None:
    for candidate in (data_dir / f"{stem}.gz", data_dir / stem):
        if candidate.exists():
            return candidate
    return None


def load_split(split: str, data_dir: str | Path | None = None, *, download: bool = True) -> MnistSplit:
    """Load `train` or `test`, downloading missing files when `download` is set."""
    directory = resolve_data_dir(data_dir)
    image_stem, label_stem = SPLIT_FILES[split]
    paths = []
    for stem in (image_stem, label_stem):
        path = _find_file(directory, stem)
        if path is None:
            if not download:
                raise FileNotFoundError(f"{stem}(.gz) not found in {directory}")
            path = download_file(stem, directory)
        paths.append(path)
    images, labels = read_images(paths[0]), read_labels(paths[1])
    if len(images) != len(labels):
        raise IdxFormatError(f"{split}: {len(images)} images but {len(labels)} labels")
    return MnistSplit(images=images, labels=labels)


def dataset_sha256(data_dir: str | Path | None = None) -> str:
    """One digest over the decompressed content of the four files, in a fixed order."""
    directory = resolve_data_dir(data_dir)
    digest = hashlib.sha256()
    for stems in SPLIT_FILES.values():
        for stem in stems:
            path = _find_file(directory, stem)
            if path is None:
                raise FileNotFoundError(f"{stem}(.gz) not found in {directory}")
            digest.update(hashlib.sha256(_open_bytes(path)).digest())
    return digest.hexdigest()


# Called with (bytes so far, total or None) while reading, then once with -1 when done.
ProgressCallback = Callable[[int, int | None], None]


def _print_progress(name: str) -> ProgressCallback:
    def report(done: int, total: int | None) -> None:
        if done < 0:
            sys.stderr.write("\n")
        elif total:
            sys.stderr.write(f"\r{name}: {done / 1e6:.1f}/{total / 1e6:.1f} MB ({100 * done / total:.0f}%)")
        else:
            sys.stderr.write(f"\r{name}: {done / 1e6:.1f} MB")
        sys.stderr.flush()

    return report


def _fetch(url: str, progress: ProgressCallback, timeout: float) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - fixed https mirrors
        total = int(response.headers.get("Content-Length") or 0) or None
        chunks: list[bytes] = []
        done = 0
        while chunk := response.read(1 << 16):
            chunks.append(chunk)
            done += len(chunk)
            progress(done, total)
    progress(-1, total)
    return b"".join(chunks)


def download_file(
    stem: str,
    data_dir: Path,
    *,
    mirrors: Sequence[str] | None = None,
    expected_sha256: str | None = None,
    timeout: float = 30.0,
    progress: ProgressCallback | None = None,
) -> Path:
    """Fetch `<stem>.gz` from the first mirror that serves it with the right content checksum.

    The file is written atomically (temporary file, then rename) and only after its
    decompressed content matched the checksum; a bad copy from one mirror moves on to the next.
    `mirrors` defaults to the module's `MIRRORS`, read at call time.
    """
    mirrors = MIRRORS if mirrors is None else mirrors
    expected = expected_sha256 or CONTENT_SHA256[stem]
    report = progress or _print_progress(stem)
    errors: list[str] = []
    for mirror in mirrors:
        url = f"{mirror.rstrip('/')}/{stem}.gz"
        try:
            payload = _fetch(url, report, timeout)
            content = gzip.decompress(payload)
        except (urllib.error.URLError, OSError, EOFError, ValueError) as exc:
            errors.append(f"{url}: {exc}")
            log.warning("download failed from %s: %s", url, exc)
            continue
        actual = hashlib.sha256(content).hexdigest()
        if actual != expected:
            errors.append(f"{url}: sha256 {actual} != {expected}")
            log.warning("checksum mismatch from %s", url)
            continue
        data_dir.mkdir(parents=True, exist_ok=True)
        target = data_dir / f"{stem}.gz"
        with tempfile.NamedTemporaryFile(dir=data_dir, prefix=f".{stem}.", suffix=".part", delete=False) as tmp:
            tmp.write(payload)
        os.chmod(tmp.name, 0o644)
        os.replace(tmp.name, target)
        log.info("downloaded %s from %s", stem, mirror)
        return target
    raise DownloadError(f"could not download {stem}: " + "; ".join(errors))
