"""How the benchmark starts each anchor: its environment, its command line and its settings.

Each anchor serves the benchmark's ONNX file under the benchmark's model name, through ONNX Runtime
with its default session options (what a user's custom model class would do), on 127.0.0.1 where
the server lets us choose (KServe's REST server listens on every address), with its other ports
(gRPC, metrics) on free ports. Settings, each server's own where it has one:

- MLServer: `mlserver start` on a folder holding settings.json and model-settings.json; adaptive
  batching on, as its docs recommend for throughput (max_batch_size 64, max_batch_time 2 ms; the
  service batches up to 64 images too); one inference worker process (parallel_workers, its default).
- KServe: its `ModelServer` with one uvicorn worker (its default), V2 over REST and the binary
  extension; no per-request log lines (its access log and latency lines are on by default).
- Triton through PyTriton: dynamic batching with Triton's default queue delay (0), max_batch_size
  256 (the largest request sent), one model instance; the tritonserver binary finds libpython
  through LD_LIBRARY_PATH (the environment's base Python's LIBDIR), as PyTriton's guide says.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from bench.anchors.setup import (
    ANCHORS_ROOT,
    MARKER,
    PACKAGES,
    SETUP_COMMAND,
    environment_dir,
    read_marker,
    requirements_digest,
    venv_python,
)
from bench.servers import HOST, ServerSpec, free_port

REPO_ROOT = Path(__file__).resolve().parent.parent.parent
MLSERVER_MAX_BATCH_SIZE = 64
MLSERVER_MAX_BATCH_TIME_S = 0.002
LABELS = {
    "mlserver": ("MLServer", "adaptive batching"),
    "kserve": ("KServe model server", "V2 REST"),
    "triton": ("Triton via PyTriton", "dynamic batching"),
}


@dataclass(frozen=True)
class Environment:
    anchor: str
    directory: Path
    versions: dict[str, str]

    @property
    def python(self) -> Path:
        return venv_python(self.directory)

    @property
    def title(self) -> str:
        label, settings = LABELS[self.anchor]
        return f"{label} {self.versions.get(PACKAGES[self.anchor], '?')} ({settings})"


def find_environment(anchor: str, root: Path = ANCHORS_ROOT) -> Environment | str:
    """The anchor's built environment, or one line saying why there is none and how to build it."""
    directory = environment_dir(anchor, root)
    marker = read_marker(anchor, root)
    rebuild = f"build it with `{SETUP_COMMAND} {anchor}`" if root == ANCHORS_ROOT else \
        f"build it with `python -m bench.anchors.setup --root {root} {anchor}`"
    if marker is None or not venv_python(directory).exists():
        return f"{anchor}: skipped, no environment in {directory} ({MARKER} missing); {rebuild}"
    if marker.get("requirements_sha256") != requirements_digest(anchor):
        return f"{anchor}: skipped, {directory} was built from other requirements; re{rebuild}"
    return Environment(anchor, directory, dict(marker.get("versions", {})))


def _common_env() -> dict[str, str]:
    """The anchors import their module from bench.anchors, and nothing else from this project."""
    return {"PYTHONPATH": str(REPO_ROOT), "PYTHONDONTWRITEBYTECODE": "1"}


def mlserver_spec(environment: Environment, model: str, model_path: Path, port: int, work_dir: Path) -> ServerSpec:
    """`mlserver start` on a model repository written into work_dir (MLServer writes its .metrics there too)."""
    model_dir = work_dir / model
    model_dir.mkdir(parents=True, exist_ok=True)
    settings = {"host": HOST, "http_port": port, "grpc_port": free_port(), "metrics_port": free_port(),
                "metrics_dir": str(work_dir / ".metrics"), "environments_dir": str(work_dir / ".envs")}
    model_settings = {"name": model, "implementation": "bench.anchors.mlserver_model.OnnxRuntimeModel",
                      "parameters": {"uri": str(model_path)}, "max_batch_size": MLSERVER_MAX_BATCH_SIZE,
                      "max_batch_time": MLSERVER_MAX_BATCH_TIME_S}
    (work_dir / "settings.json").write_text(json.dumps(settings, indent=2) + "\n")
    (model_dir / "model-settings.json").write_text(json.dumps(model_settings, indent=2) + "\n")
    return ServerSpec("mlserver", environment.title, port, [str(environment.directory / "bin" / "mlserver"), "start",
                                                             str(work_dir)],
                      _common_env(), f"/v2/models/{model}/ready", cwd=work_dir)


def kserve_spec(environment: Environment, model: str, model_path: Path, port: int, work_dir: Path) -> ServerSpec:
    argv = [str(environment.python), "-m", "bench.anchors.kserve_server", "--model_path", str(model_path),
            "--model_name", model, "--http_port", str(port), "--grpc_port", str(free_port()),
            "--enable_latency_logging", "false"]
    return ServerSpec("kserve", environment.title, port, argv, _common_env(), f"/v2/models/{model}/ready",
                      cwd=work_dir)


def python_libdir(python: Path) -> str:
    """The directory of the libpython that `python` was built with."""
    return subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_config_var('LIBDIR'))"],
                          check=True, capture_output=True, text=True, timeout=60).stdout.strip()


def triton_spec(environment: Environment, model: str, model_path: Path, port: int, work_dir: Path) -> ServerSpec:
    argv = [str(environment.python), "-m", "bench.anchors.pytriton_server", "--model-path", str(model_path),
            "--model-name", model, "--host", HOST, "--http-port", str(port), "--grpc-port", str(free_port()),
            "--metrics-port", str(free_port())]
    library_path = ":".join(filter(None, [python_libdir(environment.python), os.environ.get("LD_LIBRARY_PATH")]))
    env = {**_common_env(), "LD_LIBRARY_PATH": library_path}
    return ServerSpec("triton", environment.title, port, argv, env, f"/v2/models/{model}/ready", cwd=work_dir)


BUILDERS = {"mlserver": mlserver_spec, "kserve": kserve_spec, "triton": triton_spec}


def anchor_spec(environment: Environment, model: str, model_path: Path, port: int, work_dir: Path) -> ServerSpec:
    work_dir.mkdir(parents=True, exist_ok=True)
    return BUILDERS[environment.anchor](environment, model, model_path, port, work_dir)
