"""The model repository layout: names, versions, discovery and atomic writes."""

from __future__ import annotations

from pathlib import Path

import pytest

from contract import store


@pytest.mark.parametrize("text, expected", [("1", 1), ("12", 12), ("007", 7), ("999999999", 999999999)])
def test_versions_are_positive_ascii_integers(text: str, expected: int) -> None:
    assert store.parse_version(text) == expected


@pytest.mark.parametrize("text", ["0", "", "-1", "+1", "1.0", "abc", "²", "١", "1234567890", " 1"])
def test_other_directory_names_are_not_versions(text: str) -> None:
    assert store.parse_version(text) is None


def test_scan_ignores_what_is_not_a_model_version(tmp_path: Path) -> None:
    store.write_atomic(store.model_path(tmp_path, "digits", 1), b"one")
    store.write_atomic(store.model_path(tmp_path, "digits", 3), b"three")
    (tmp_path / "digits" / "²").mkdir()  # isdigit() accepts it, int() does not
    (tmp_path / "digits" / "²" / store.MODEL_FILE).write_bytes(b"x")
    (tmp_path / "digits" / "2").mkdir()  # no model file yet
    (tmp_path / ".hidden" / "1").mkdir(parents=True)
    (tmp_path / ".hidden" / "1" / store.MODEL_FILE).write_bytes(b"x")
    assert store.scan(tmp_path) == {"digits": {1: store.model_path(tmp_path, "digits", 1),
                                               3: store.model_path(tmp_path, "digits", 3)}}
    assert store.next_version(tmp_path, "digits") == 4
    assert store.next_version(tmp_path, "new") == 1


def test_write_atomic_replaces_whole_files_readable_by_others(tmp_path: Path) -> None:
    target = store.model_path(tmp_path, "digits", 1)
    store.write_atomic(target, b"old")
    store.write_atomic(target, b"new")
    assert target.read_bytes() == b"new"
    assert target.stat().st_mode & 0o044 == 0o044
    assert [p.name for p in target.parent.iterdir()] == [store.MODEL_FILE]


def test_locate_takes_the_highest_version_or_a_file(tmp_path: Path) -> None:
    for version in (1, 2):
        store.write_atomic(store.model_path(tmp_path, "digits", version), b"x")
    assert store.locate(tmp_path / "digits") == ("digits", 2, store.model_path(tmp_path, "digits", 2))
    loose = tmp_path / "candidate.onnx"
    loose.write_bytes(b"x")
    assert store.locate(loose) == ("candidate", None, loose)
    with pytest.raises(FileNotFoundError):
        store.locate(tmp_path / "missing")


def test_one_models_directory_as_kserve_lays_it_out(tmp_path: Path) -> None:
    """KServe's storage initializer puts one model's files straight into /mnt/models."""
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / store.MODEL_FILE).write_bytes(b"x")
    assert store.scan_single(bare, "digits") == {"digits": {1: bare / store.MODEL_FILE}}
    versioned = tmp_path / "versioned"
    for version in (1, 2):
        store.write_atomic(versioned / str(version) / store.MODEL_FILE, b"x")
    assert sorted(store.scan_single(versioned, "digits")["digits"]) == [1, 2]
    assert store.scan_single(versioned, "digits", only="other") == {}
    assert store.scan_single(tmp_path / "empty", "digits") == {}
