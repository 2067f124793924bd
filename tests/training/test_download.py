"""download_file and load_split(download=True) against a real HTTP server on loopback."""

from __future__ import annotations

import functools
import gzip
import hashlib
import shutil
import socket
import struct
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import mnist_dir
from training import data
from training.data import CONTENT_SHA256, DownloadError, download_file, load_split

LABELS = "t10k-labels-idx1-ubyte"
IMAGES = "t10k-images-idx3-ubyte"


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        pass


@pytest.fixture(scope="module")
def mirror_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`good/` holds the real test-set archives; `corrupt/` a label file with one label changed
    (valid gzip, wrong content); `truncated/` a label archive cut in half."""
    root = tmp_path_factory.mktemp("mirrors")
    for folder in ("good", "corrupt", "truncated"):
        (root / folder).mkdir()
    for stem in (LABELS, IMAGES):
        shutil.copy(mnist_dir() / f"{stem}.gz", root / "good" / f"{stem}.gz")
    original = (root / "good" / f"{LABELS}.gz").read_bytes()
    content = bytearray(gzip.decompress(original))
    content[-1] = (content[-1] + 1) % 10
    (root / "corrupt" / f"{LABELS}.gz").write_bytes(gzip.compress(bytes(content)))
    (root / "truncated" / f"{LABELS}.gz").write_bytes(original[: len(original) // 2])
    return root


@pytest.fixture(scope="module")
def server_url(mirror_root: Path) -> Iterator[str]:
    handler = functools.partial(QuietHandler, directory=str(mirror_root))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@pytest.fixture
def closed_port_url() -> str:
    """A loopback URL nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


class ProgressLog:
    def __init__(self) -> None:
        self.calls: list[tuple[int, int | None]] = []

    def __call__(self, done: int, total: int | None) -> None:
        self.calls.append((done, total))


def test_good_download_writes_the_archive(server_url: str, mirror_root: Path, tmp_path: Path) -> None:
    target_dir = tmp_path / "fresh" / "mnist"
    progress = ProgressLog()

    path = download_file(LABELS, target_dir, mirrors=[f"{server_url}/good/"], progress=progress)

    assert path == target_dir / f"{LABELS}.gz"
    assert path.read_bytes() == (mirror_root / "good" / f"{LABELS}.gz").read_bytes()
    assert hashlib.sha256(gzip.decompress(path.read_bytes())).hexdigest() == CONTENT_SHA256[LABELS]
    assert sorted(p.name for p in target_dir.iterdir()) == [f"{LABELS}.gz"]
    size = path.stat().st_size
    assert progress.calls[-2] == (size, size) and progress.calls[-1] == (-1, size)


@pytest.mark.parametrize(("folder", "reason"), [("corrupt", "sha256"), ("truncated", "")])
def test_bad_copy_is_rejected_and_nothing_is_written(server_url: str, tmp_path: Path, folder: str, reason: str) -> None:
    target_dir = tmp_path / "mnist"
    target_dir.mkdir()

    with pytest.raises(DownloadError, match=f"{folder}/{LABELS}.gz: {reason}"):
        download_file(LABELS, target_dir, mirrors=[f"{server_url}/{folder}"], progress=ProgressLog())

    assert list(target_dir.iterdir()) == []


def test_missing_target_dir_is_not_created_for_a_bad_copy(server_url: str, tmp_path: Path) -> None:
    with pytest.raises(DownloadError):
        download_file(LABELS, tmp_path / "never", mirrors=[f"{server_url}/corrupt"], progress=ProgressLog())
    assert not (tmp_path / "never").exists()


def test_falls_over_to_the_next_mirror(server_url: str, closed_port_url: str, tmp_path: Path) -> None:
    mirrors = [closed_port_url, f"{server_url}/missing/", f"{server_url}/corrupt/", f"{server_url}/good/"]

    path = download_file(LABELS, tmp_path, mirrors=mirrors, timeout=5, progress=ProgressLog())

    assert hashlib.sha256(gzip.decompress(path.read_bytes())).hexdigest() == CONTENT_SHA256[LABELS]
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{LABELS}.gz"]


def test_error_names_every_mirror_that_failed(server_url: str, closed_port_url: str, tmp_path: Path) -> None:
    mirrors = [closed_port_url, f"{server_url}/missing/", f"{server_url}/corrupt/"]

    with pytest.raises(DownloadError) as raised:
        download_file(LABELS, tmp_path, mirrors=mirrors, timeout=5, progress=ProgressLog())

    message = str(raised.value)
    assert closed_port_url.rstrip("/") in message
    assert "404" in message
    assert f"corrupt/{LABELS}.gz: sha256" in message
    assert list(tmp_path.iterdir()) == []


def test_expected_sha256_overrides_the_recorded_one(server_url: str, mirror_root: Path, tmp_path: Path) -> None:
    labels = np.array([1, 2, 3], dtype=np.uint8)
    content = struct.pack(">II", data.LABELS_MAGIC, 3) + labels.tobytes()
    (mirror_root / "good" / "tiny-labels.gz").write_bytes(gzip.compress(content))
    mirror = f"{server_url}/good/"

    with pytest.raises(DownloadError, match="sha256"):
        download_file("tiny-labels", tmp_path, mirrors=[mirror], expected_sha256="0" * 64, progress=ProgressLog())
    assert list(tmp_path.iterdir()) == []

    path = download_file("tiny-labels", tmp_path, mirrors=[mirror], expected_sha256=hashlib.sha256(content).hexdigest(),
                         progress=ProgressLog())
    np.testing.assert_array_equal(data.read_labels(path), labels)


def test_load_split_downloads_missing_files_from_the_mirrors(
    server_url: str, closed_port_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(data, "MIRRORS", (closed_port_url, f"{server_url}/good/"))
    target_dir = tmp_path / "mnist"

    split = load_split("test", target_dir, download=True)

    assert len(split) == 10_000
    assert np.bincount(split.labels, minlength=10).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert sorted(p.name for p in target_dir.iterdir()) == [f"{IMAGES}.gz", f"{LABELS}.gz"]
