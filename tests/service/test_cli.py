"""`mnist-serve serve` through the real console script: every setting is a flag with its default in
the help, and a start that cannot honour its settings exits 2 with one line and no traceback."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from service.config import Settings
from service.settings_cli import env_name, flag
from tests.conftest import MODELS_DIR

CONSOLE_SCRIPT = shutil.which("mnist-serve")
pytestmark = pytest.mark.skipif(CONSOLE_SCRIPT is None, reason="the package is not installed (pip install -e .)")


def mnist_serve(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    clean = {key: value for key, value in os.environ.items() if not key.startswith("MNIST_SERVE_")}
    return subprocess.run([CONSOLE_SCRIPT, *args], env={**clean, **(env or {})}, capture_output=True, text=True,
                          timeout=timeout)


def assert_refused(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("refusing to start: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0]
    assert "Traceback" not in result.stdout + result.stderr


def test_help_lists_every_setting_with_its_default_and_environment_variable() -> None:
    result = mnist_serve("serve", "--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    for name, info in Settings.model_fields.items():
        assert flag(name) in text, name
        assert env_name(name) in text, name
    assert "default 8000" in text and "default 127.0.0.1" in text


@pytest.mark.parametrize("args, env, fragments", [
    (["--port", "99999"], {}, ["--port=99999", "less than or equal to 65535"]),
    ([], {"MNIST_SERVE_PORT": "99999"}, ["MNIST_SERVE_PORT=99999", "65535"]),
    ([], {"MNIST_SERVE_MAX_BATCH_SIZE": "abc"}, ["MNIST_SERVE_MAX_BATCH_SIZE=abc", "valid integer"]),
    ([], {"MNIST_SERVE_CORS_ORIGINS": "not json"}, ["cors_origins", "JSON"]),
    (["--device", "cuda"], {}, ["device 'cuda' requested"]),
    (["--models-dir", "/nonexistent/models"], {}, ["/nonexistent/models does not exist"]),
])
def test_settings_that_cannot_be_honoured_are_one_line_and_exit_2(args: list[str], env: dict[str, str],
                                                                  fragments: list[str]) -> None:
    assert_refused(mnist_serve("serve", *args, env=env), *fragments)


def test_a_models_dir_without_a_valid_model_is_refused(tmp_path: Path) -> None:
    broken = tmp_path / "digits" / "1" / "model.onnx"
    broken.parent.mkdir(parents=True)
    broken.write_bytes(b"not onnx")
    assert_refused(mnist_serve("serve", "--models-dir", str(tmp_path)), "no valid model", "digits/1")


def test_a_port_in_use_is_refused(tmp_path: Path) -> None:
    models = tmp_path / "models" / "lenet-pytorch" / "1"
    models.mkdir(parents=True)
    shutil.copyfile(MODELS_DIR / "lenet-pytorch" / "1" / "model.onnx", models / "model.onnx")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = mnist_serve("serve", "--port", str(port), "--models-dir", str(tmp_path / "models"),
                             "--default-model", "lenet-pytorch", "--device", "cpu")
    assert_refused(result, f"127.0.0.1:{port}", "in use")
