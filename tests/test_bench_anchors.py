"""The benchmark's anchors. CI cannot afford building their environments (1.3 GiB, minutes: see
docs/benchmark.md), so most tests need none: the skip path, their start-up commands, the check of an
anchor's answers against a real loopback server that answers right or wrong, the anchors' table and
issue 18's targets. Where `mnist-serve bench --setup-anchors` has built them, each real anchor is
also started and checked against in-process ONNX Runtime."""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest

from bench import inprocess, servers
from bench.anchor_report import evaluate_anchor_targets, render_anchor_section
from bench.anchors import setup
from bench.anchors.specs import Environment, anchor_spec, find_environment
from bench.matrix import ANCHORS, REQUESTS_BY_SERVER, parse_anchors, requests_for
from bench.payloads import all_workloads, v2_json
from bench.report import Point, Results, Sample, add_ratios, render_markdown, results_from_json
from bench.run import BenchPlan, Started, check_answers, verify_server, verify_servers

REPO_ROOT = Path(__file__).resolve().parent.parent
MODEL = "cnn-pytorch"
FAKE_SERVER = Path(__file__).resolve().parent / "fake_v2_server.py"


@pytest.fixture(scope="module")
def model_path() -> Path:
    return BenchPlan(model=MODEL, models_dir=REPO_ROOT / "models", out_dir=REPO_ROOT).model_path


@pytest.fixture(scope="module")
def images(mnist_test_set: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    return mnist_test_set[0][:256]


@pytest.fixture(scope="module")
def reference(model_path: Path, images: np.ndarray) -> np.ndarray:
    return inprocess.predict_probabilities(model_path, images)


# --- environments and start-up -------------------------------------------------------------------------

def test_an_anchor_without_an_environment_is_skipped_with_the_command_that_builds_it(tmp_path: Path) -> None:
    for anchor in ANCHORS:
        reason = find_environment(anchor, tmp_path)
        assert isinstance(reason, str)
        assert reason.startswith(f"{anchor}: skipped, no environment in {tmp_path / setup.ENVIRONMENTS[anchor]}")
        assert f"python -m bench.anchors.setup --root {tmp_path} {anchor}" in reason


def _fake_environment(root: Path, anchor: str, digest: str) -> Path:
    """An environment folder as setup leaves it: a python and anchor.json (the python is this one)."""
    directory = setup.environment_dir(anchor, root)
    (directory / "bin").mkdir(parents=True)
    (directory / "bin" / "python").symlink_to(sys.executable)
    (directory / setup.MARKER).write_text(json.dumps({"anchor": anchor, "requirements_sha256": digest,
                                                      "versions": {setup.PACKAGES[anchor]: "9.9", "onnxruntime": "1"}}))
    return directory


def test_an_environment_built_from_other_requirements_is_skipped(tmp_path: Path) -> None:
    _fake_environment(tmp_path, "kserve", digest="0" * 64)
    reason = find_environment("kserve", tmp_path)
    assert isinstance(reason, str) and "built from other requirements" in reason


def test_a_built_environment_names_the_anchor_and_its_version(tmp_path: Path) -> None:
    _fake_environment(tmp_path, "mlserver", setup.requirements_digest("mlserver"))
    environment = find_environment("mlserver", tmp_path)
    assert isinstance(environment, Environment)
    assert environment.title == "MLServer 9.9 (adaptive batching)"


def test_each_anchor_starts_on_the_model_file_with_its_settings(tmp_path: Path, model_path: Path) -> None:
    prefix = Path(sys.prefix)
    mlserver = anchor_spec(Environment("mlserver", prefix, {}), MODEL, model_path, 8123, tmp_path / "mlserver")
    assert mlserver.argv[1:] == ["start", str(tmp_path / "mlserver")]
    assert mlserver.cwd == tmp_path / "mlserver" and mlserver.ready_path == f"/v2/models/{MODEL}/ready"
    settings = json.loads((tmp_path / "mlserver" / "settings.json").read_text())
    assert (settings["host"], settings["http_port"]) == ("127.0.0.1", 8123)
    assert len({settings["http_port"], settings["grpc_port"], settings["metrics_port"]}) == 3
    model_settings = json.loads((tmp_path / "mlserver" / MODEL / "model-settings.json").read_text())
    assert model_settings["parameters"]["uri"] == str(model_path)
    assert model_settings["max_batch_size"] > 1 and model_settings["max_batch_time"] > 0  # adaptive batching on

    kserve = anchor_spec(Environment("kserve", prefix, {}), MODEL, model_path, 8124, tmp_path / "kserve")
    assert kserve.argv[1:3] == ["-m", "bench.anchors.kserve_server"]
    assert ["--model_name", MODEL] == kserve.argv[kserve.argv.index("--model_name"):][:2]
    assert kserve.argv[kserve.argv.index("--http_port") + 1] == "8124"

    triton = anchor_spec(Environment("triton", prefix, {}), MODEL, model_path, 8125, tmp_path / "triton")
    assert triton.argv[1:3] == ["-m", "bench.anchors.pytriton_server"]
    assert triton.env["LD_LIBRARY_PATH"].split(":")[0] == sysconfig.get_config_var("LIBDIR")
    assert triton.env["PYTHONPATH"] == str(REPO_ROOT)


def test_anchors_on_the_command_line() -> None:
    assert parse_anchors(None) == ()
    assert parse_anchors("all") == ANCHORS
    assert parse_anchors("triton, kserve") == ("triton", "kserve")
    with pytest.raises(ValueError, match="unknown anchor.*nope"):
        parse_anchors("triton,nope")


def test_setup_refuses_an_unknown_anchor() -> None:
    completed = subprocess.run([sys.executable, "-m", "bench.anchors.setup", "--root", "/nonexistent", "torchserve"],
                               cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert completed.returncode == 2
    assert "unknown anchor(s) torchserve" in completed.stderr


def test_a_failed_build_leaves_no_marker_so_the_anchor_stays_skipped(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    requirements = tmp_path / "requirements"
    requirements.mkdir()
    (requirements / "kserve.txt").write_text(f"{tmp_path / 'no-such-package-1.0-py3-none-any.whl'}\n")
    monkeypatch.setattr(setup, "REQUIREMENTS_DIR", requirements)
    assert setup.setup(["kserve"], setup.default_base_python(), tmp_path / "anchors") == 1
    assert "kserve: build failed" in capsys.readouterr().err
    assert (tmp_path / "anchors" / "kserve" / "bin" / "python").exists()
    assert setup.read_marker("kserve", tmp_path / "anchors") is None
    assert "skipped, no environment" in str(find_environment("kserve", tmp_path / "anchors"))


def test_one_place_lists_what_each_server_is_sent(images: np.ndarray) -> None:
    known = all_workloads(images, MODEL, f"{MODEL}-int8")
    assert set(REQUESTS_BY_SERVER) >= set(ANCHORS)
    for requests in REQUESTS_BY_SERVER.values():
        assert set(requests) <= set(known)
    assert "v2-binary" not in REQUESTS_BY_SERVER["mlserver"]  # no binary tensor extension in MLServer's REST
    assert requests_for("kserve", ("v2-json", "v1-json")) == ("v2-json",)
    assert requests_for("naive", ("v2-json",)) == ("naive-json",)
    assert known["v2-json-256"].images == 256 and known["v2-json-256"].decode is not None


# --- the check of an anchor's answers ------------------------------------------------------------------

def _start_fake(model_path: Path, lie: str, log_dir: Path, name: str = "kserve") -> servers.RunningServer:
    port = servers.free_port()
    spec = servers.ServerSpec(name, f"fake anchor ({lie})", port,
                              [sys.executable, str(FAKE_SERVER), "--model-path", str(model_path), "--port", str(port),
                               "--lie", lie], {}, f"/v2/models/{MODEL}/ready")
    return servers.start(spec, log_dir)


@pytest.mark.parametrize("lie, message", [("swap", "labels"), ("nudge", "probabilities differ"),
                                          ("garble", "cannot be read")])
def test_an_anchor_that_answers_wrong_is_caught(lie: str, message: str, model_path: Path, images: np.ndarray,
                                                reference: np.ndarray, tmp_path: Path) -> None:
    honest, liar = _start_fake(model_path, "none", tmp_path), _start_fake(model_path, lie, tmp_path)
    try:
        workload = v2_json(images[:8], MODEL)
        check_answers(honest, workload, reference)
        with pytest.raises(RuntimeError, match=message):
            check_answers(liar, workload, reference)
    finally:
        honest.stop()
        liar.stop()


def test_a_wrong_anchor_is_stopped_and_skipped_but_a_wrong_service_stops_the_run(
        model_path: Path, images: np.ndarray, reference: np.ndarray, tmp_path: Path) -> None:
    plan = BenchPlan(model=MODEL, models_dir=REPO_ROOT / "models", out_dir=tmp_path, servers=("batching-on",),
                     anchors=("kserve", "triton"))
    honest = _start_fake(model_path, "none", tmp_path, "triton")
    liar = _start_fake(model_path, "swap", tmp_path, "kserve")
    try:
        started = Started(servers={"kserve": liar, "triton": honest})
        workloads = {name: [all_workloads(images, MODEL)["v2-json"]] for name in started.servers}
        verify_servers(started, workloads, images, {MODEL: reference}, plan)
        assert list(started.servers) == ["triton"]
        assert started.skipped["kserve"].startswith("kserve: skipped, it answered wrong: fake anchor (swap)")
        assert liar.process.poll() is not None

        as_service = Started(servers={"batching-on": _start_fake(model_path, "nudge", tmp_path, "batching-on")})
        try:
            with pytest.raises(RuntimeError, match="probabilities differ"):
                verify_servers(as_service, {"batching-on": workloads["triton"]}, images, {MODEL: reference}, plan)
        finally:
            as_service.servers["batching-on"].stop()
    finally:
        honest.stop()
        liar.stop()


@pytest.mark.parametrize("anchor", ANCHORS)
def test_a_built_anchor_answers_every_request_as_in_process_onnx_runtime(
        anchor: str, model_path: Path, images: np.ndarray, reference: np.ndarray, tmp_path: Path) -> None:
    """The real server, where `mnist-serve bench --setup-anchors` has built it (CI does not: too big)."""
    environment = find_environment(anchor)
    if isinstance(environment, str):
        pytest.skip(environment)
    server = servers.start(anchor_spec(environment, MODEL, model_path, servers.free_port(), tmp_path / anchor),
                           tmp_path)
    try:
        workloads = [all_workloads(images, MODEL)[name] for name in REQUESTS_BY_SERVER[anchor]]
        verify_server(server, workloads, images, {MODEL: reference}, MODEL)
    finally:
        server.stop()
    assert server.process.poll() is not None


# --- the table and the targets -------------------------------------------------------------------------

def _sample(requests_per_s: float, images: int = 1, p50: float = 1.0, p99: float = 10.0) -> Sample:
    return Sample(requests_per_s=requests_per_s, images_per_s=requests_per_s * images, p50_ms=p50, p95_ms=p99 / 2,
                  p99_ms=p99, errors=0, server_cpu=1.0, client_cpu=0.1, other_cpu=0.0)


TITLES = {"naive": "naive server", "mlserver": "MLServer 1.7.1 (adaptive batching)",
          "kserve": "KServe model server 0.21.0 (V2 REST)", "triton": "Triton via PyTriton 0.7.0 (dynamic batching)",
          "batching-on": "service, batching on"}


def _results(service: dict[tuple[str, int], Sample], skipped: dict[str, str] | None = None) -> Results:
    """The issue's table as points: naive, MLServer (JSON only), KServe, Triton, and the service."""
    measured = {
        ("naive", "naive-json", 1): _sample(650, p50=1.52), ("naive", "naive-json", 64): _sample(609, p99=178),
        ("mlserver", "v2-json", 1): _sample(300, p50=3.33), ("mlserver", "v2-json", 64): _sample(622, p99=215),
        ("mlserver", "v2-json-256", 1): _sample(2340 / 256, images=256),
        ("kserve", "v2-json", 1): _sample(500, p50=1.97), ("kserve", "v2-json", 64): _sample(609, p99=162),
        ("kserve", "v2-binary", 1): _sample(480, p50=2.1), ("kserve", "v2-binary", 64): _sample(544, p99=170),
        ("kserve", "v2-binary-256", 1): _sample(1659 / 256, images=256),
        ("triton", "v2-json", 1): _sample(330, p50=2.99), ("triton", "v2-json", 64): _sample(1358, p99=85),
        ("triton", "v2-binary", 1): _sample(350, p50=2.5), ("triton", "v2-binary", 64): _sample(1423, p99=80),
        ("triton", "v2-binary-256", 1): _sample(3000 / 256, images=256),
        ("triton", "v2-binary-256", 16): _sample(3617 / 256, images=256),
        **{("batching-on", workload, concurrency): sample for (workload, concurrency), sample in service.items()},
    }
    points = [Point(server, TITLES[server], workload, workload, concurrency, 256 if "256" in workload else 1,
                    [sample] * 3) for (server, workload, concurrency), sample in measured.items()]
    results = Results(
        date="2026-01-01 00:00 UTC",
        machine={"cpu_model": "test CPU", "cpus": 2, "available_cpus": 2, "os": "Linux", "python": "3.11",
                 "onnxruntime": "1.0"},
        settings={"model": MODEL, "duration_s": 5.0, "runs": 3, "load_tool": "wrk", "skipped": skipped or {}},
        limit_runs={1: [{"1 thread": 2000.0}] * 3, 256: [{"1 thread": 4092.0}] * 3}, points=points)
    add_ratios(results)
    results.anchor_targets = evaluate_anchor_targets(results)
    return results


ISSUE_SERVICE = {("v2-json", 1): _sample(800, p50=1.23), ("v2-json", 64): _sample(1656, p99=56),
                 ("v2-binary", 1): _sample(850, p50=1.1), ("v2-binary", 64): _sample(1858, p99=60),
                 ("v2-binary-256", 16): _sample(3236 / 256, images=256)}


def test_the_anchors_table_shows_each_server_with_ratios_to_the_best_anchor() -> None:
    lines = render_anchor_section(_results(ISSUE_SERVICE))
    table = {line.split(" | ")[0].strip("| *"): line for line in lines if line.startswith("| ")}
    assert "| naive server (its /predict JSON) | 1.52 ms, 1.30× | 609 (178 ms), 0.45× |  |  |" in lines
    assert table["MLServer 1.7.1 (adaptive batching)"].endswith(
        "| 3.33 ms, 0.59× | 622 (215 ms), 0.46× |  | 2,340 JSON (c=1, 57% of in-process), 0.65× |")
    assert table["KServe model server 0.21.0 (V2 REST)"].endswith(
        "| 1.97 ms, 1.00× | 609 (162 ms), 0.45× | 544 (170 ms), 0.38× | 1,659 (c=1, 41% of in-process), 0.46× |")
    assert table["Triton via PyTriton 0.7.0 (dynamic batching)"].endswith(
        "| 2.99 ms, 0.66× | 1,358 (85 ms), 1.00× | 1,423 (80 ms), 1.00× | 3,617 (c=16, 88% of in-process), 1.00× |")
    assert "| **service, batching on** | 1.23 ms, 1.60× | 1,656 (56 ms), 1.22× | 1,858 (60 ms), 1.31× " \
           "| 3,236 (c=16, 79% of in-process), 0.89× |" in lines


def test_issue_18_targets_are_judged_against_the_best_anchor_of_the_run() -> None:
    targets = {target.title: target for target in _results(ISSUE_SERVICE).anchor_targets}
    json_rate = targets["v2-json at concurrency 64: req/s ≥ 1.5× the best anchor's"]
    assert json_rate.met is False
    assert json_rate.measured == "1.22× (1,656 req/s; Triton via PyTriton 0.7.0 (dynamic batching): 1,358)"
    assert targets["v2-json at concurrency 64: p99 ≤ that anchor's"].met is True
    assert targets["v2-json at concurrency 64: p99 ≤ that anchor's"].required == \
        "≤ 85.0 ms (Triton via PyTriton 0.7.0 (dynamic batching))"
    assert targets["v2-binary at concurrency 64: req/s ≥ 1.5× the best anchor's"].met is False
    batch = targets["v2-binary-256: images/s ≥ 95% of in-process (best concurrency)"]
    assert batch.met is False
    assert batch.measured == "79% (3,236 images/s at c=16; best anchor Triton via PyTriton 0.7.0 (dynamic batching): 88%)"
    latency = targets["v2-json at concurrency 1: p50 ≤ the best anchor's"]
    assert latency.met is True and latency.required == "≤ 1.97 ms (KServe model server 0.21.0 (V2 REST))"
    assert targets["v2-binary at concurrency 1: p50 ≤ the best anchor's"].required.startswith("≤ 2.10 ms (KServe")

    faster = {**ISSUE_SERVICE, ("v2-json", 64): _sample(2100, p99=90), ("v2-binary", 64): _sample(2200, p99=70),
              ("v2-binary-256", 16): _sample(3950 / 256, images=256), ("v2-json", 1): _sample(700, p50=2.5)}
    targets = {target.title: target.met for target in _results(faster).anchor_targets}
    assert targets == {
        "v2-json at concurrency 64: req/s ≥ 1.5× the best anchor's": True,
        "v2-json at concurrency 64: p99 ≤ that anchor's": False,  # 90 ms against Triton's 85
        "v2-binary at concurrency 64: req/s ≥ 1.5× the best anchor's": True,
        "v2-binary at concurrency 64: p99 ≤ that anchor's": True,
        "v2-binary-256: images/s ≥ 95% of in-process (best concurrency)": True,
        "v2-json at concurrency 1: p50 ≤ the best anchor's": False,
        "v2-binary at concurrency 1: p50 ≤ the best anchor's": True,
    }


def test_a_point_without_any_answer_is_never_the_best_nor_a_met_target() -> None:
    """A slow server's requests may all come back after the point's end: no p50 of 0 ms wins anything."""
    nothing = _sample(0, p50=0.0, p99=0.0)
    results = _results({**ISSUE_SERVICE, ("v2-json", 64): nothing})
    for point in results.points:
        if (point.server, point.workload, point.concurrency) == ("kserve", "v2-json", 1):
            point.runs = [nothing] * 3
    results.anchor_targets = evaluate_anchor_targets(results)
    lines = render_anchor_section(results)
    kserve = next(line for line in lines if line.startswith("| KServe"))
    assert kserve.startswith("| KServe model server 0.21.0 (V2 REST) | no answer within the point (c=1) |")
    targets = {target.title: target for target in results.anchor_targets}
    assert targets["v2-json at concurrency 1: p50 ≤ the best anchor's"].required == \
        "≤ 2.99 ms (Triton via PyTriton 0.7.0 (dynamic batching))"
    assert targets["v2-json at concurrency 64: req/s ≥ 1.5× the best anchor's"].met is False
    assert targets["v2-json at concurrency 64: p99 ≤ that anchor's"].met is False


def test_without_anchors_the_report_has_no_anchor_table_and_says_which_were_skipped() -> None:
    results = _results(ISSUE_SERVICE, skipped={"kserve": "kserve: skipped, no environment in x; build it with y"})
    results.points = [point for point in results.points if point.server not in ANCHORS]
    results.anchor_targets = evaluate_anchor_targets(results)
    assert results.anchor_targets == []
    markdown = render_markdown(results)
    assert "- kserve: skipped, no environment in x; build it with y" in markdown
    assert "against the best anchor" not in markdown


def test_saved_results_with_anchors_render_the_same() -> None:
    results = _results(ISSUE_SERVICE, skipped={"mlserver": "mlserver: skipped, it answered wrong: labels"})
    saved = json.loads(json.dumps(results.to_json()))
    assert saved["anchor_targets"][0]["title"].startswith("v2-json at concurrency 64")
    assert render_markdown(results_from_json(saved)) == render_markdown(results)
