"""The model repository layout, `<root>/<name>/<version>/model.onnx`: discovery and atomic writes.

A name is 1-64 characters of letters, digits, `_`, `.` and `-`, starting with a letter or digit;
a version is a positive integer in at most 9 ASCII digits. Other directories are ignored.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

MODEL_FILE = "model.onnx"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
MAX_VERSION_DIGITS = 9


def parse_version(text: str) -> int | None:
    """A version directory's name (or a client's version string) -> the version, or None when it
    is not one. `str.isdigit()` alone accepts characters `int()` refuses (superscripts)."""
    if not (text.isascii() and text.isdigit() and 0 < len(text) <= MAX_VERSION_DIGITS):
        return None
    version = int(text)
    return version if version > 0 else None


def is_model_name(text: str) -> bool:
    return bool(NAME_PATTERN.match(text))


def model_path(root: Path, name: str, version: int) -> Path:
    return root / name / str(version) / MODEL_FILE


def versions_of(model_dir: Path) -> dict[int, Path]:
    """The versions under one model's directory that hold a model file."""
    found: dict[int, Path] = {}
    if not model_dir.is_dir():
        return found
    for version_dir in model_dir.iterdir():
        version = parse_version(version_dir.name)
        if version is not None and (version_dir / MODEL_FILE).is_file():
            found[version] = version_dir / MODEL_FILE
    return found


def scan(root: Path, only: str | None = None) -> dict[str, dict[int, Path]]:
    """Every model under `root` (or just `only`) with at least one version: name -> version -> file."""
    found: dict[str, dict[int, Path]] = {}
    if not root.is_dir():
        return found
    for model_dir in sorted(root.iterdir()):
        if not model_dir.is_dir() or not is_model_name(model_dir.name) or (only and model_dir.name != only):
            continue
        versions = versions_of(model_dir)
        if versions:
            found[model_dir.name] = versions
    return found


def scan_single(model_dir: Path, name: str, only: str | None = None) -> dict[str, dict[int, Path]]:
    """`model_dir` as the one model `name`: its `<version>/model.onnx` files, or a bare `model.onnx`
    as version 1 (how KServe's storage initializer lays out /mnt/models for one model)."""
    if only and only != name:
        return {}
    versions = versions_of(model_dir)
    if not versions and (model_dir / MODEL_FILE).is_file():
        versions = {1: model_dir / MODEL_FILE}
    return {name: versions} if versions else {}


def next_version(root: Path, name: str) -> int:
    """One past the highest version directory of `name` (with or without a model file in it)."""
    model_dir = root / name
    taken = [parse_version(child.name) for child in model_dir.iterdir()] if model_dir.is_dir() else []
    return max((v for v in taken if v is not None), default=0) + 1


def write_atomic(target: Path, content: bytes) -> Path:
    """Write `content` to `target` so that a reader sees the old file or the whole new one, never
    part of it: a temporary file in the same directory, then a rename."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=target.parent, prefix=f".{target.name}.", suffix=".part", delete=False) as tmp:
        try:
            tmp.write(content)
        except BaseException:
            os.unlink(tmp.name)
            raise
    os.chmod(tmp.name, 0o644)  # readable by a server running as another user
    os.replace(tmp.name, target)
    return target


def locate(path: Path) -> tuple[str, int | None, Path]:
    """`<root>/<name>` (its highest version) or a model file -> (name, version or None, file)."""
    if path.is_file():
        version = parse_version(path.parent.name)
        name = path.parent.parent.name if version is not None else path.stem
        return name, version, path
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such model directory or file")
    versions = versions_of(path)
    if not versions:
        raise FileNotFoundError(f"{path}: no <version>/{MODEL_FILE} inside")
    latest = max(versions)
    return path.name, latest, versions[latest]
