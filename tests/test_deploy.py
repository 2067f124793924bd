"""The deployment files agree with the service: compose, the Dockerfile, .dockerignore and nginx.

No Docker engine runs here, so these checks are static, except the last ones: the command each
server image runs is started locally with the environment that compose gives it, and answers its
health check; SIGHUP and the admin reload, which the docs use to serve a newly trained model,
keep it serving.
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.version import Version
from starlette.routing import BaseRoute, Match, Mount

from service.cli import build_parser
from service.config import Settings
from service.main import create_app
from tests.conftest import MODELS_DIR, REPO_ROOT, ServerProcess, free_port

COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
CPU_OVERRIDE_FILE = REPO_ROOT / "docker-compose.cpu.yml"
DOCKERFILE = REPO_ROOT / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"
NGINX_CONF = REPO_ROOT / "deploy" / "nginx.conf"
DEPLOYMENT_DOC = REPO_ROOT / "docs" / "deployment.md"
REQUIREMENTS_HELPER = REPO_ROOT / "deploy" / "pyproject_requirements.py"
CONSTRAINTS = REPO_ROOT / "deploy" / "constraints.txt"

SERVER_SERVICES = ("mnist-serve", "mnist-serve-pool")
SCALE_SERVICE = "mnist-serve-pool"
GPU_TARGET, CPU_TARGET, TRAIN_TARGET = "gpu", "cpu", "train"
ENV_PREFIX = "MNIST_SERVE_"


# ---------------------------------------------------------------- compose: loading and interpolation
@dataclass(frozen=True)
class Reset:
    """Compose's `!reset` / `!override` tags: the override replaces the base value."""

    tag: str
    value: Any


class ComposeLoader(yaml.SafeLoader):
    """PyYAML's safe loader plus the two tags that Compose adds."""


def _tagged(loader: ComposeLoader, node: yaml.Node) -> Reset:
    if isinstance(node, yaml.SequenceNode):
        value: Any = loader.construct_sequence(node, deep=True)
    elif isinstance(node, yaml.MappingNode):
        value = loader.construct_mapping(node, deep=True)
    else:
        value = loader.construct_scalar(node)
    return Reset(node.tag, value)


ComposeLoader.add_constructor("!reset", _tagged)
ComposeLoader.add_constructor("!override", _tagged)

INTERPOLATION = re.compile(r"\$(?:(?P<escaped>\$)|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
                           r"|(?P<plain>[A-Za-z_][A-Za-z0-9_]*))")


def interpolate(text: str, variables: dict[str, str]) -> str:
    """Compose's `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:+alt}`, `$VAR` and `$$`."""

    def substitute(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        name = match["braced"] or match["plain"]
        value, op, arg = variables.get(name), match["op"], match["arg"] or ""
        if op in (":-", "-"):
            use_default = value is None or (op == ":-" and value == "")
            return arg if use_default else str(value)
        if op in (":+", "+"):
            present = value is not None and (op == "+" or value != "")
            return arg if present else ""
        if op in (":?", "?"):
            if value is None or (op == ":?" and value == ""):
                raise ValueError(f"required variable {name} is not set: {arg}")
        return value or ""

    return INTERPOLATION.sub(substitute, text)


def interpolated(node: Any, variables: dict[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, variables)
    if isinstance(node, list):
        return [interpolated(item, variables) for item in node]
    if isinstance(node, dict):
        return {key: interpolated(value, variables) for key, value in node.items()}
    if isinstance(node, Reset):
        return Reset(node.tag, interpolated(node.value, variables))
    return node


def load_compose(path: Path, variables: dict[str, str] | None = None) -> dict[str, Any]:
    document = yaml.load(path.read_text(), Loader=ComposeLoader)  # noqa: S506 - a SafeLoader subclass
    return interpolated(document, variables or {})


def merge_compose(base: Any, override: Any) -> Any:
    """Compose's merge of an override file: mappings merge key by key, `!reset` replaces."""
    if isinstance(override, Reset):
        return override.value
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for key, value in override.items():
            merged[key] = merge_compose(base.get(key), value) if key in base else merge_compose(None, value)
        return merged
    return override


def environment_of(service: dict[str, Any]) -> dict[str, str]:
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) if "=" in item else (item, "") for item in raw)
    return {str(key): "" if value is None else str(value) for key, value in raw.items()}


def volume_mounts(service: dict[str, Any]) -> dict[str, str]:
    """Mount target -> source (a named volume or a host path)."""
    mounts: dict[str, str] = {}
    for entry in service.get("volumes") or []:
        if isinstance(entry, dict):
            mounts[entry["target"]] = entry.get("source", "")
        else:
            source, target = entry.split(":")[:2]
            mounts[target] = source
    return mounts


def published_ports(service: dict[str, Any]) -> list[tuple[int, int]]:
    """(host port, container port) pairs of the short syntax."""
    pairs = []
    for entry in service.get("ports") or []:
        parts = str(entry).split("/")[0].split(":")
        pairs.append((int(parts[-2]), int(parts[-1])))
    return pairs


def parse_duration_s(text: str) -> float:
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", str(text))
    assert parts and "".join(n + u for n, u in parts) == str(text), f"not a duration: {text!r}"
    return sum(float(number) * units[unit] for number, unit in parts)


def healthcheck_url(service: dict[str, Any]) -> tuple[str, int, str]:
    test = service["healthcheck"]["test"]
    command = " ".join(test) if isinstance(test, list) else str(test)
    match = re.search(r"https?://(?P<host>[^/:'\"\s]+):(?P<port>\d+)(?P<path>/[^'\"\s?]*)", command)
    assert match, f"no URL in the health check {command!r}"
    return match["host"], int(match["port"]), match["path"]


# ---------------------------------------------------------------- Dockerfile parsing
@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [arguments for instruction, arguments in self.instructions if instruction == keyword]


@dataclass
class Dockerfile:
    global_args: dict[str, str]
    stages: dict[str, Stage]

    def parent(self, stage: Stage) -> Stage | None:
        return self.stages.get(stage.base)

    def chain(self, target: str) -> list[Stage]:
        """The target stage and the stages it is built FROM, base first."""
        stages, stage = [], self.stages[target]
        while stage is not None:
            stages.insert(0, stage)
            stage = self.parent(stage)
        return stages

    def environment(self, target: str) -> dict[str, str]:
        env: dict[str, str] = {}
        for stage in self.chain(target):
            for arguments in stage.all("ENV"):
                env.update(parse_env(arguments, env))
        return env

    def last(self, target: str, keyword: str) -> str | None:
        values = [value for stage in self.chain(target) for value in stage.all(keyword)]
        return values[-1] if values else None

    def external_images(self) -> list[str]:
        return [substitute_args(stage.base, self.global_args) for stage in self.stages.values()
                if stage.base not in self.stages]


def logical_lines(text: str) -> list[str]:
    """Join backslash continuations; drop comments and blank lines (also inside continuations)."""
    lines, current = [], ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        lines.append(current + stripped)
        current = ""
    if current:
        lines.append(current)
    return lines


def substitute_args(text: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m[1] or m[2], m[0]), text)


def parse_env(arguments: str, current: dict[str, str]) -> dict[str, str]:
    tokens = shlex.split(arguments)
    if tokens and "=" not in tokens[0]:
        return {tokens[0]: " ".join(tokens[1:])}
    pairs = dict(token.split("=", 1) for token in tokens)
    return {key: substitute_args(value, current) for key, value in pairs.items()}


def parse_dockerfile(path: Path) -> Dockerfile:
    global_args: dict[str, str] = {}
    stages: dict[str, Stage] = {}
    stage: Stage | None = None
    for line in logical_lines(path.read_text()):
        instruction, _, arguments = line.partition(" ")
        instruction, arguments = instruction.upper(), arguments.strip()
        if instruction == "FROM":
            words = [word for word in arguments.split() if not word.startswith("--platform")]
            name = words[2] if len(words) == 3 and words[1].lower() == "as" else str(len(stages))
            stage = Stage(name=name, base=words[0])
            stages[name] = stage
        elif stage is None:
            assert instruction == "ARG", f"only ARG may come before the first FROM, not {instruction}"
            key, _, default = arguments.partition("=")
            global_args[key] = default
        else:
            stage.instructions.append((instruction, arguments))
    return Dockerfile(global_args, stages)


@dataclass(frozen=True)
class Copy:
    sources: list[str]
    destination: str
    from_stage: str | None


def parse_copy(arguments: str) -> Copy:
    words = shlex.split(arguments)
    flags = {word.split("=", 1)[0]: word.split("=", 1)[-1] for word in words if word.startswith("--")}
    paths = [word for word in words if not word.startswith("--")]
    return Copy(sources=paths[:-1], destination=paths[-1], from_stage=flags.get("--from"))


def exec_form(arguments: str) -> list[str]:
    import json

    value = json.loads(arguments)
    assert isinstance(value, list) and all(isinstance(item, str) for item in value), arguments
    return value


# ---------------------------------------------------------------- .dockerignore (moby's patternmatcher)
@dataclass(frozen=True)
class IgnoreRule:
    regex: re.Pattern[str]
    exception: bool


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    out, index = [], 0
    while index < len(pattern):
        char = pattern[index]
        if pattern.startswith("**/", index):
            out.append("(?:.*/)?")
            index += 3
            continue
        if pattern.startswith("**", index):
            out.append(".*")
            index += 2
            continue
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[":
            end = pattern.index("]", index)
            body = pattern[index + 1:end]
            out.append("[" + ("^" + body[1:] if body.startswith("!") else body) + "]")
            index = end + 1
            continue
        else:
            out.append(re.escape(char))
        index += 1
    return re.compile("^" + "".join(out) + "$")


def parse_dockerignore(path: Path) -> list[IgnoreRule]:
    rules = []
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        exception = line.startswith("!")
        pattern = os.path.normpath(line[1:].strip() if exception else line).lstrip("/")
        rules.append(IgnoreRule(_pattern_regex(pattern), exception))
    return rules


def is_excluded(relative_path: str, rules: list[IgnoreRule]) -> bool:
    """A path is excluded when the last rule matching it, or one of its parent folders, excludes."""
    parts = Path(relative_path).parts
    candidates = ["/".join(parts[: index + 1]) for index in range(len(parts))]
    excluded = False
    for rule in rules:
        if any(rule.regex.match(candidate) for candidate in candidates):
            excluded = not rule.exception
    return excluded


def context_files(directory: Path) -> list[str]:
    """Files a clone of the repository has under `directory` (tracked, or new and not ignored)."""
    result = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "--", str(directory)],
                            cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    return [line for line in result.stdout.splitlines() if (REPO_ROOT / line).is_file()]


# ---------------------------------------------------------------- nginx
def nginx_directives(text: str) -> list[tuple[list[str], list[str]]]:
    """(enclosing block names, directive words) for every simple directive of an nginx config."""
    cleaned = re.sub(r"#[^\n]*", "", text)
    tokens = re.findall(r"'[^']*'|\"[^\"]*\"|[{};]|[^\s{};]+", cleaned)
    directives, blocks, words = [], [], []
    for token in tokens:
        if token == "{":
            blocks.append(" ".join(words))
            words = []
        elif token == "}":
            blocks.pop()
        elif token == ";":
            directives.append((list(blocks), words))
            words = []
        else:
            words.append(token)
    assert not blocks, "unbalanced braces in nginx.conf"
    return directives


def nginx_size_bytes(text: str) -> int:
    match = re.fullmatch(r"(\d+)([kKmMgG]?)", text)
    assert match, text
    return int(match[1]) * {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[match[2].lower()]


# ---------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose(COMPOSE_FILE)


@pytest.fixture(scope="module")
def cpu_override() -> dict[str, Any]:
    return load_compose(CPU_OVERRIDE_FILE)


@pytest.fixture(scope="module")
def cpu_compose(compose: dict[str, Any], cpu_override: dict[str, Any]) -> dict[str, Any]:
    return merge_compose(compose, cpu_override)


@pytest.fixture(scope="module")
def dockerfile() -> Dockerfile:
    return parse_dockerfile(DOCKERFILE)


@pytest.fixture(scope="module")
def ignore_rules() -> list[IgnoreRule]:
    return parse_dockerignore(DOCKERIGNORE)


@pytest.fixture(scope="module")
def settings_fields() -> set[str]:
    return set(Settings.model_fields)


@functools.cache
def app_routes() -> list[BaseRoute]:
    return list(create_app(Settings()).routes)


def is_route(path: str, method: str) -> bool:
    """Whether the app's route table has `method path` (Mounts such as /static do not count)."""
    scope = {"type": "http", "method": method, "path": path, "root_path": "", "headers": [], "query_string": b""}
    return any(route.matches(scope)[0] == Match.FULL and not isinstance(route, Mount) for route in app_routes())


def is_get_route(path: str) -> bool:
    return is_route(path, "GET")


def build_target(service: dict[str, Any]) -> str:
    return service["build"]["target"]


def server_environment(dockerfile: Dockerfile, service: dict[str, Any]) -> dict[str, str]:
    """What the container sees: the image's ENV, then compose's environment on top."""
    return {**dockerfile.environment(build_target(service)), **environment_of(service)}


# ---------------------------------------------------------------- compose file
def test_compose_defines_the_services_and_profiles(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"mnist-serve", "mnist-serve-pool", "lb", "train"}
    assert "profiles" not in services["mnist-serve"], "plain `docker compose up` must start the server"
    assert services["mnist-serve-pool"]["profiles"] == ["scale"]
    assert services["lb"]["profiles"] == ["scale"]
    assert services["train"]["profiles"] == ["train"]
    assert set(compose["volumes"]) >= {"models", "mnist-data", "reports"}


def test_compose_settings_variables_are_settings_fields(compose: dict[str, Any], cpu_override: dict[str, Any],
                                                        dockerfile: Dockerfile, settings_fields: set[str]) -> None:
    seen = []
    documents = [compose["services"], cpu_override["services"]]
    for services in documents:
        for name, service in services.items():
            for key in environment_of(service):
                if key.startswith(ENV_PREFIX):
                    seen.append(key)
                    assert key[len(ENV_PREFIX):].lower() in settings_fields, f"{name}: {key} is not a Settings field"
    for target in (GPU_TARGET, CPU_TARGET):
        for key in dockerfile.environment(target):
            if key.startswith(ENV_PREFIX):
                assert key[len(ENV_PREFIX):].lower() in settings_fields, f"Dockerfile {target}: {key}"
    assert len(seen) >= 8


@pytest.mark.parametrize("variant", ["gpu", "cpu"])
def test_compose_environment_is_valid_settings(variant: str, compose: dict[str, Any], cpu_compose: dict[str, Any],
                                               dockerfile: Dockerfile) -> None:
    services = (compose if variant == "gpu" else cpu_compose)["services"]
    for name in SERVER_SERVICES:
        env = server_environment(dockerfile, services[name])
        values = {key[len(ENV_PREFIX):].lower(): value for key, value in env.items() if key.startswith(ENV_PREFIX)}
        settings = Settings(**values)
        assert settings.device == ("cuda" if variant == "gpu" else "cpu")
        assert settings.host == "0.0.0.0", "inside a container the server must listen on every interface"
        assert not settings.admin_allowed, "the admin API is off unless MNIST_SERVE_ADMIN_TOKEN is set"


def test_published_port_is_the_container_port(compose: dict[str, Any], dockerfile: Dockerfile) -> None:
    service = compose["services"]["mnist-serve"]
    port = int(server_environment(dockerfile, service)["MNIST_SERVE_PORT"])
    assert published_ports(service) == [(port, port)]
    assert str(port) in dockerfile.last(GPU_TARGET, "EXPOSE").split()
    assert str(port) in dockerfile.last(CPU_TARGET, "EXPOSE").split()
    assert "ports" not in compose["services"][SCALE_SERVICE], "replicas cannot share one host port"


@pytest.mark.parametrize("service_name", SERVER_SERVICES)
def test_health_check_probes_the_readiness_route(service_name: str, compose: dict[str, Any],
                                                 dockerfile: Dockerfile) -> None:
    service = compose["services"][service_name]
    host, port, path = healthcheck_url(service)
    assert host in ("127.0.0.1", "localhost")
    assert port == int(server_environment(dockerfile, service)["MNIST_SERVE_PORT"])
    assert path in ("/readyz", "/v2/health/ready")
    assert is_get_route(path), f"{path} is not a GET route of the app"
    assert service["healthcheck"]["test"][0] == "CMD"
    assert service["healthcheck"]["test"][1] == "python", "the slim images have no curl: the check uses Python"
    assert parse_duration_s(service["healthcheck"]["start_period"]) >= 30


def test_not_a_route_is_not_a_route() -> None:
    assert not is_get_route("/no-such-route")
    assert not is_get_route("/v2/repository/index"), "POST only"


@pytest.mark.parametrize("service_name", SERVER_SERVICES)
def test_models_volume_is_the_models_dir(service_name: str, compose: dict[str, Any], dockerfile: Dockerfile) -> None:
    service = compose["services"][service_name]
    models_dir = server_environment(dockerfile, service)["MNIST_SERVE_MODELS_DIR"]
    mounts = volume_mounts(service)
    assert mounts.get(models_dir) == "models", f"the models volume must be mounted at {models_dir}"
    assert "models" in compose["volumes"]


@pytest.mark.parametrize("service_name", SERVER_SERVICES)
def test_gpu_service_requires_cuda_and_reserves_an_nvidia_gpu(service_name: str, compose: dict[str, Any],
                                                              dockerfile: Dockerfile) -> None:
    service = compose["services"][service_name]
    assert build_target(service) == GPU_TARGET
    assert server_environment(dockerfile, service)["MNIST_SERVE_DEVICE"] == "cuda"
    devices = service["deploy"]["resources"]["reservations"]["devices"]
    assert any(device["driver"] == "nvidia" and "gpu" in device["capabilities"] for device in devices)


@pytest.mark.parametrize("variant", ["gpu", "cpu"])
def test_threads_match_the_cpu_limit(variant: str, compose: dict[str, Any], cpu_compose: dict[str, Any],
                                     dockerfile: Dockerfile) -> None:
    services = (compose if variant == "gpu" else cpu_compose)["services"]
    for name in SERVER_SERVICES:
        service = services[name]
        limits = service["deploy"]["resources"]["limits"]
        threads = int(server_environment(dockerfile, service)["MNIST_SERVE_THREADS"])
        assert threads == float(limits["cpus"]) and threads >= 1, name
        assert limits["memory"]
    train = compose["services"]["train"]
    command = train["command"]
    assert int(command[command.index("--threads") + 1]) == float(train["deploy"]["resources"]["limits"]["cpus"])


def test_every_service_has_logs_restart_and_limits(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        logging = service["logging"]
        assert logging["driver"] == "json-file", name
        assert re.fullmatch(r"\d+[kmg]", logging["options"]["max-size"]), name
        assert int(logging["options"]["max-file"]) >= 1, name
        assert service["deploy"]["resources"]["limits"]["cpus"], name
        assert service["deploy"]["resources"]["limits"]["memory"], name
        expected_restart = "no" if name == "train" else "unless-stopped"
        assert service["restart"] == expected_restart, name


@pytest.mark.parametrize("service_name", SERVER_SERVICES)
def test_stop_grace_period_covers_the_drain(service_name: str, compose: dict[str, Any], dockerfile: Dockerfile) -> None:
    service = compose["services"][service_name]
    env = server_environment(dockerfile, service)
    drain_s = float(env.get("MNIST_SERVE_SHUTDOWN_GRACE_S", Settings().shutdown_grace_s))
    assert parse_duration_s(service["stop_grace_period"]) > drain_s


def test_cpu_override_switches_every_gpu_service_to_the_cpu(compose: dict[str, Any], cpu_override: dict[str, Any],
                                                            cpu_compose: dict[str, Any], dockerfile: Dockerfile) -> None:
    gpu_services = {name for name, service in compose["services"].items()
                    if service.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices")}
    assert gpu_services == set(SERVER_SERVICES)
    assert set(cpu_override["services"]) == gpu_services
    for name in gpu_services:
        raw = cpu_override["services"][name]["deploy"]["resources"]["reservations"]["devices"]
        assert raw == Reset("!reset", []), f"{name}: the GPU reservation must be reset"
        service = cpu_compose["services"][name]
        assert build_target(service) == CPU_TARGET
        assert service["build"]["context"] == "."
        assert service["image"] != compose["services"][name]["image"]
        assert service["deploy"]["resources"]["reservations"]["devices"] == []
        assert server_environment(dockerfile, service)["MNIST_SERVE_DEVICE"] == "cpu"


def test_merge_compose_follows_the_reset_tag() -> None:
    base = {"a": {"b": [1], "c": 1}, "d": 1}
    override = yaml.load("a:\n  b: !reset []\n  e: 2\n", Loader=ComposeLoader)  # noqa: S506
    assert merge_compose(base, override) == {"a": {"b": [], "c": 1, "e": 2}, "d": 1}


def test_interpolation_follows_compose_rules() -> None:
    assert interpolate("${A:-x}-${B-y}-${C}-$$D-$E", {"A": "", "B": "", "E": "e"}) == "x--" + "-$D-e"
    assert interpolate("${A:+set}${B+set}", {"A": "1", "B": ""}) == "setset"
    with pytest.raises(ValueError):
        interpolate("${A:?must be set}", {})


# ---------------------------------------------------------------- the deployment guide
COMPOSE_SUBCOMMAND = re.compile(r"\b(?:exec|logs|restart|stop|build|kill -s SIGHUP|run --rm)\s+(?P<service>[a-z][\w-]*)")


def test_guide_commands_name_real_files_services_profiles_and_routes(compose: dict[str, Any]) -> None:
    text = DEPLOYMENT_DOC.read_text()
    services = compose["services"]
    profiles = {profile for service in services.values() for profile in service.get("profiles", [])}
    commands = re.findall(r"docker compose[^\n`]*", text)
    assert len(commands) >= 15
    for command in commands:
        for profile in re.findall(r"--profile (\S+)", command):
            assert profile in profiles, command
        for file in re.findall(r"-f (\S+)", command):
            assert (REPO_ROOT / file).is_file(), command
        for service, replicas in re.findall(r"--scale ([\w-]+)=(\d+)", command):
            assert service == SCALE_SERVICE and int(replicas) > 1, command
        for match in COMPOSE_SUBCOMMAND.finditer(command):
            assert match["service"] in services, command
    urls = re.findall(r"localhost:(\d+)(/[\w/.-]*)", text)
    published = {host for service in services.values() for host, _ in published_ports(service)}
    assert len(urls) >= 8
    for port, path in urls:
        assert int(port) in published, f"localhost:{port}{path}"
        if path != "/":
            assert is_route(path, "GET") or is_route(path, "POST"), f"{path} is not a route of the app"
    for example in re.findall(r"file=@(\S+)", text):
        assert (REPO_ROOT / example).is_file(), example


# ---------------------------------------------------------------- training service
def test_train_command_is_a_valid_cli_call_into_the_models_volume(compose: dict[str, Any]) -> None:
    train = compose["services"]["train"]
    assert build_target(train) == TRAIN_TARGET
    command = train["command"]
    assert command[:2] == ["mnist-serve", "train"]
    args = build_parser().parse_args(command[1:])
    mounts = volume_mounts(train)
    assert mounts[args.out] == "models", "training must write into the volume the servers read"
    assert args.report_dir in mounts
    assert args.framework in ("pytorch", "tensorflow") and args.arch in ("cnn", "lenet")
    assert mounts[environment_of(train)["MNIST_DIR"]] == "mnist-data"


@pytest.mark.parametrize(("framework", "extras"), [("tensorflow", "tensorflow"), ("pytorch", "torch")])
def test_train_framework_and_extras_follow_the_variables(framework: str, extras: str) -> None:
    train = load_compose(COMPOSE_FILE, {"TRAIN_FRAMEWORK": framework, "TRAIN_EXTRAS": extras,
                                        "MNIST_DATA": "./data/mnist"})["services"]["train"]
    args = build_parser().parse_args(train["command"][1:])
    assert args.framework == framework
    assert train["build"]["args"]["TRAIN_EXTRAS"] == extras
    assert volume_mounts(train)["/data/mnist"] == "./data/mnist"


def test_train_image_command_is_a_valid_cli_call(dockerfile: Dockerfile) -> None:
    command = exec_form(dockerfile.last(TRAIN_TARGET, "CMD"))
    args = build_parser().parse_args(command[1:])
    assert command[0] == "mnist-serve" and args.command == "train"
    assert Path(args.out) == Path("/models")
    assert dockerfile.environment(TRAIN_TARGET)["MNIST_DIR"] == "/data/mnist"


# ---------------------------------------------------------------- scale-out: nginx
def test_nginx_upstream_names_the_replica_service_and_port(compose: dict[str, Any], dockerfile: Dockerfile) -> None:
    directives = nginx_directives(NGINX_CONF.read_text())
    upstreams = [(blocks, words) for blocks, words in directives if blocks and blocks[-1].startswith("upstream")]
    servers = [words for _, words in upstreams if words[0] == "server"]
    assert len(servers) == 1
    host, port = servers[0][1].split(":")
    pool = compose["services"][SCALE_SERVICE]
    assert host == SCALE_SERVICE
    assert int(port) == int(server_environment(dockerfile, pool)["MNIST_SERVE_PORT"])
    flags = servers[0][2:]
    assert "resolve" in flags, "re-resolve Docker DNS so that scaled or restarted replicas join"
    assert any(flag.startswith("max_fails=") for flag in flags) and any(flag.startswith("fail_timeout=") for flag in flags)
    assert any(words[0] == "zone" for _, words in upstreams), "`resolve` needs a shared memory zone"
    upstream_name = upstreams[0][0][-1].split()[1]
    proxied = [words for _, words in directives if words[0] == "proxy_pass"]
    assert proxied == [["proxy_pass", f"http://{upstream_name}"]]
    resolvers = [words for _, words in directives if words[0] == "resolver"]
    assert resolvers and resolvers[0][1] == "127.0.0.11", "Docker's embedded DNS"


def test_nginx_limits_let_the_service_answer_first(compose: dict[str, Any]) -> None:
    settings = Settings()
    values = {words[0]: words[1:] for _, words in nginx_directives(NGINX_CONF.read_text())}
    assert nginx_size_bytes(values["client_max_body_size"][0]) > settings.max_body_bytes
    assert parse_duration_s(values["proxy_read_timeout"][0]) > settings.request_timeout_s
    assert "non_idempotent" in values["proxy_next_upstream"] and "http_503" in values["proxy_next_upstream"]


def test_load_balancer_service_serves_the_nginx_config(compose: dict[str, Any]) -> None:
    lb = compose["services"]["lb"]
    assert volume_mounts(lb)["/etc/nginx/nginx.conf"] == "./deploy/nginx.conf"
    assert lb["depends_on"][SCALE_SERVICE]["condition"] == "service_healthy"
    listens = [words for _, words in nginx_directives(NGINX_CONF.read_text()) if words[0] == "listen"]
    (host_port, container_port), = published_ports(lb)
    assert listens == [["listen", str(container_port)]]
    _, port, path = healthcheck_url(lb)
    assert port == container_port and is_get_route(path)


def test_nginx_parser_reads_blocks() -> None:
    directives = nginx_directives("http { upstream u { server a:1 resolve; } # x { \n listen 80; }")
    assert directives == [(["http", "upstream u"], ["server", "a:1", "resolve"]), (["http"], ["listen", "80"])]


# ---------------------------------------------------------------- Dockerfile and build context
def test_compose_targets_are_dockerfile_stages(compose: dict[str, Any], cpu_compose: dict[str, Any],
                                               dockerfile: Dockerfile) -> None:
    targets = {build_target(service) for document in (compose, cpu_compose)
               for service in document["services"].values() if "build" in service}
    assert targets == {GPU_TARGET, CPU_TARGET, TRAIN_TARGET}
    assert targets <= set(dockerfile.stages)


def test_base_images_are_pinned(dockerfile: Dockerfile, compose: dict[str, Any]) -> None:
    images = dockerfile.external_images() + [service["image"] for service in compose["services"].values()
                                             if "build" not in service]
    assert any(image.startswith("nvidia/cuda:13.") and "cudnn" in image and "runtime" in image for image in images)
    assert any(image.startswith("python:3.11.") and "slim" in image for image in images)
    for image in images:
        assert "$" not in image, f"unresolved build argument in {image}"
        name, _, tag = image.split("@")[0].rpartition(":")
        assert name and tag != "latest", image
        assert re.search(r"\d+\.\d+\.\d+", tag) or "@sha256:" in image, f"{image}: pin an exact version"


@pytest.mark.parametrize("target", [GPU_TARGET, CPU_TARGET, TRAIN_TARGET])
def test_final_stages_run_as_a_non_root_user(target: str, dockerfile: Dockerfile) -> None:
    user = dockerfile.last(target, "USER")
    assert user, f"{target}: no USER"
    assert user.split(":")[0] not in ("root", "0")


@pytest.mark.parametrize("target", [GPU_TARGET, CPU_TARGET, TRAIN_TARGET])
def test_final_stages_carry_no_compiler_and_copy_a_built_venv(target: str, dockerfile: Dockerfile) -> None:
    stage = dockerfile.stages[target]
    for command in stage.all("RUN"):
        assert not re.search(r"\b(build-essential|gcc|g\+\+|clang|make|cmake|[\w.+-]+-dev|pip install)\b", command), command
    copies = [parse_copy(arguments) for arguments in stage.all("COPY")]
    venv_copies = [copy for copy in copies if copy.from_stage]
    assert [copy.sources for copy in venv_copies] == [["/opt/venv"]]
    assert venv_copies[0].from_stage in dockerfile.stages
    assert dockerfile.environment(target)["PATH"].startswith("/opt/venv/bin:")


def test_every_copied_path_is_in_the_build_context(dockerfile: Dockerfile, ignore_rules: list[IgnoreRule]) -> None:
    checked = 0
    for stage in dockerfile.stages.values():
        for copy in map(parse_copy, stage.all("COPY")):
            if copy.from_stage:
                continue
            for source in copy.sources:
                relative = os.path.normpath(source)
                path = REPO_ROOT / relative
                assert path.exists(), f"COPY {source}: not in the repository"
                assert not is_excluded(relative, ignore_rules), f"COPY {source}: excluded by .dockerignore"
                files = context_files(path) if path.is_dir() else [relative]
                assert files, f"COPY {source}: nothing to copy"
                for file in files:
                    assert not is_excluded(file, ignore_rules), f"{file} (under COPY {source}) is excluded"
                checked += 1
    assert checked >= 8


@pytest.mark.parametrize("path", [
    ".git/HEAD", ".venv/bin/python", "data/mnist/train-images-idx3-ubyte.gz", "reports/cnn-pytorch/a.png",
    "test-artifacts/page.png", "bench/results/run.json", "service/__pycache__/main.cpython-311.pyc",
    ".pytest_cache/v/cache", ".hypothesis/examples/x", "tests/test_deploy.py", ".env", "deploy/nginx.conf",
    "mnist_serve.egg-info/PKG-INFO", "docker-compose.yml",
])
def test_dockerignore_keeps_out(path: str, ignore_rules: list[IgnoreRule]) -> None:
    assert is_excluded(path, ignore_rules)


def test_dockerignore_matcher_semantics() -> None:
    rules = [IgnoreRule(_pattern_regex("deploy/*"), False), IgnoreRule(_pattern_regex("deploy/keep.txt"), True),
             IgnoreRule(_pattern_regex("**/*.pyc"), False)]
    assert is_excluded("deploy/x.conf", rules) and not is_excluded("deploy/keep.txt", rules)
    assert is_excluded("a/b/c.pyc", rules) and is_excluded("c.pyc", rules) and not is_excluded("a/c.py", rules)
    assert not is_excluded("deployment/x.conf", rules)


# ---------------------------------------------------------------- pinned dependencies
def _pyproject() -> dict[str, Any]:
    return tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]


def _requirements(extras: str) -> list[Requirement]:
    result = subprocess.run([sys.executable, str(REQUIREMENTS_HELPER), str(REPO_ROOT / "pyproject.toml"), extras],
                            capture_output=True, text=True, check=True)
    return [Requirement(line) for line in result.stdout.splitlines()]


def _constraints() -> dict[str, Version]:
    pins = {}
    for line in CONSTRAINTS.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            requirement = Requirement(line)
            (specifier,) = requirement.specifier
            assert specifier.operator == "==", line
            pins[_normalise(requirement.name)] = Version(specifier.version)
    return pins


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_requirements_helper_expands_the_extras() -> None:
    own = _normalise(_pyproject()["name"])
    requirements = _requirements("cpu,torch,tensorflow")
    names = [_normalise(requirement.name) for requirement in requirements]
    assert own not in names
    assert {"onnxruntime", "torch", "tensorflow-cpu", "tf2onnx", "matplotlib", "tqdm", "fastapi"} <= set(names)
    assert "onnxruntime-gpu" not in names and len(names) == len(set(names))
    gpu_names = {_normalise(requirement.name) for requirement in _requirements("gpu")}
    assert "onnxruntime-gpu" in gpu_names and "onnxruntime" not in gpu_names
    failed = subprocess.run([sys.executable, str(REQUIREMENTS_HELPER), str(REPO_ROOT / "pyproject.toml"), "no-such"],
                            capture_output=True, text=True)
    assert failed.returncode == 2 and "unknown extra" in failed.stderr


def test_installed_environment_satisfies_the_image_requirements() -> None:
    for requirement in _requirements("cpu,torch,tensorflow"):
        installed = Version(importlib.metadata.version(requirement.name))
        assert requirement.specifier.contains(installed, prereleases=True), f"{requirement} vs {installed}"


def test_constraints_pin_every_requirement_at_the_tested_version() -> None:
    pins = _constraints()
    for requirement in _requirements("cpu,gpu,torch,tensorflow"):
        name = _normalise(requirement.name)
        assert name in pins, f"{name} is not pinned in {CONSTRAINTS.name}"
        assert requirement.specifier.contains(pins[name], prereleases=True), f"{requirement} vs pin {pins[name]}"


# ---------------------------------------------------------------- the images' command, run here
def local_server_environment(dockerfile: Dockerfile, service: dict[str, Any], port: int,
                             extra: dict[str, str] | None = None) -> dict[str, str]:
    """The container's MNIST_* environment, with what only makes sense here replaced."""
    container = {key: value for key, value in server_environment(dockerfile, service).items()
                 if key.startswith("MNIST_")}
    assert container["MNIST_SERVE_DEVICE"] in ("cuda", "cpu")
    container.update({"MNIST_SERVE_DEVICE": "cpu", "MNIST_SERVE_HOST": "127.0.0.1", "MNIST_SERVE_PORT": str(port),
                      "MNIST_SERVE_MODELS_DIR": str(MODELS_DIR), **(extra or {})})
    inherited = {key: value for key, value in os.environ.items() if not key.startswith("MNIST_SERVE_")}
    return {**inherited, **container, "PYTHONUNBUFFERED": "1"}


def start_image_command(command: list[str], env: dict[str, str], log_dir: Path, ready_path: str,
                        timeout_s: float = 90.0) -> ServerProcess:
    executable = Path(sys.executable).parent / command[0]
    assert executable.exists(), f"{command[0]} is not installed in {executable.parent}"
    port = env["MNIST_SERVE_PORT"]
    log_path = log_dir / f"image-command-{port}.log"
    process = subprocess.Popen([str(executable), *command[1:]], env=env, cwd=log_dir,
                               stdout=log_path.open("wb"), stderr=subprocess.STDOUT)
    server = ServerProcess(url=f"http://127.0.0.1:{port}", process=process, log_path=log_path, env=env)
    return server.wait_ready(ready_path, timeout_s)


def assert_graceful_stop(server: ServerProcess) -> None:
    """`docker stop` sends SIGTERM: the server drains and exits 0 (the container's exit code)."""
    returncode = server.stop(signal.SIGTERM)
    assert returncode == 0, server.log()
    assert "Application shutdown complete" in server.log(), server.log()


@pytest.mark.parametrize("variant", ["gpu", "cpu"])
def test_image_command_serves_with_the_compose_environment(variant: str, compose: dict[str, Any],
                                                           cpu_compose: dict[str, Any], dockerfile: Dockerfile,
                                                           tmp_path: Path) -> None:
    service = (compose if variant == "gpu" else cpu_compose)["services"]["mnist-serve"]
    command = exec_form(dockerfile.last(build_target(service), "CMD"))
    _, _, ready_path = healthcheck_url(service)
    env = local_server_environment(dockerfile, service, free_port())
    server = start_image_command(command, env, tmp_path, ready_path)
    try:
        ready = httpx.get(server.url + ready_path, timeout=5).json()
        assert ready["status"] == "ready" and ready["providers"] == ["CPUExecutionProvider"]
        assert httpx.get(server.url + "/v1/models", timeout=5).json()["models"]
    finally:
        assert_graceful_stop(server)


def test_documented_reloads_keep_the_server_serving(compose: dict[str, Any], dockerfile: Dockerfile,
                                                    tmp_path: Path) -> None:
    """`docker compose kill -s SIGHUP mnist-serve` and the admin load call, as docs/deployment.md runs them."""
    token = "deploy-test-token"
    with_token = load_compose(COMPOSE_FILE, {"MNIST_SERVE_ADMIN_TOKEN": token})["services"]["mnist-serve"]
    command = exec_form(dockerfile.last(build_target(with_token), "CMD"))
    _, _, ready_path = healthcheck_url(with_token)
    env = local_server_environment(dockerfile, with_token, free_port())
    assert env["MNIST_SERVE_ADMIN_TOKEN"] == token
    server = start_image_command(command, env, tmp_path, ready_path)
    try:
        model = Settings().default_model
        loaded = httpx.post(f"{server.url}/v2/repository/models/{model}/load",
                            headers={"Authorization": f"Bearer {token}"}, timeout=30)
        assert loaded.status_code == 200, loaded.text
        assert loaded.json()["versions"]
        refused = httpx.post(f"{server.url}/v2/repository/models/{model}/load", timeout=30)
        assert refused.status_code == 401
        server.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 30
        while "SIGHUP" not in server.log() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "SIGHUP" in server.log(), server.log()
        assert server.process.poll() is None, "SIGHUP must reload, not stop the server"
        assert httpx.get(server.url + ready_path, timeout=5).status_code == 200
    finally:
        assert_graceful_stop(server)
