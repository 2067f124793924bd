"""The benchmark's parts on loopback: the naive server, the load generators, CPU accounting, the report,
and one very short end-to-end run against the naive server and the service."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from bench import inprocess, scaling, servers
from bench.cpu import machine_cpu_times, process_tree_cpu_seconds
from bench.load import default_tool, run_load, write_body
from bench.payloads import BATCH_IMAGES, decode_v2_binary, naive_json, v2_binary
from bench.report import (
    DOC_END,
    DOC_START,
    Point,
    Results,
    Sample,
    add_ratios,
    evaluate_targets,
    render_markdown,
    results_from_json,
    update_document,
)
from bench.run import BenchPlan, run_benchmark, write_results
from bench.scaling import layouts

REPO_ROOT = Path(__file__).resolve().parent.parent
MODELS_DIR = REPO_ROOT / "models"
MODEL = "cnn-pytorch"


@pytest.fixture(scope="module")
def model_path() -> Path:
    return BenchPlan(model=MODEL, models_dir=MODELS_DIR, out_dir=REPO_ROOT).model_path


@pytest.fixture(scope="module")
def images(mnist_test_set: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    return mnist_test_set[0][:BATCH_IMAGES]


@pytest.fixture(scope="module")
def naive_server(model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[servers.RunningServer]:
    server = servers.start(servers.naive_spec(model_path, servers.free_port()), tmp_path_factory.mktemp("naive"))
    yield server
    server.stop()


def test_naive_server_predicts_what_in_process_onnx_runtime_predicts(
        naive_server: servers.RunningServer, model_path: Path, images: np.ndarray) -> None:
    expected = inprocess.predict_labels(model_path, images[:8])
    for index in range(8):
        workload = naive_json(images[index])
        status, body, headers = servers.post(naive_server.url + workload.path, workload.body, workload.content_type,
                                             workload.headers)
        assert status == 200
        probabilities = workload.decode(body, headers)
        assert probabilities.shape == (1, 10)
        assert probabilities.sum() == pytest.approx(1.0, abs=1e-4)
        assert json.loads(body)["label"] == expected[index] == probabilities.argmax()


def test_naive_server_refuses_an_image_of_the_wrong_shape(naive_server: servers.RunningServer) -> None:
    status, _, _ = servers.post(naive_server.url + "/predict", json.dumps({"image": [[0.0] * 27] * 28}).encode(),
                                "application/json", {})
    assert status == 422


@pytest.mark.parametrize("tool", sorted({"asyncio", default_tool()}))
def test_load_generator_reports_sane_numbers(tool: str, naive_server: servers.RunningServer, images: np.ndarray,
                                             tmp_path: Path) -> None:
    workload = naive_json(images[0])
    result = run_load(tool, naive_server.url, workload, write_body(workload, tmp_path), concurrency=4, duration=1.0)
    assert result.tool == tool
    assert result.errors == 0
    assert result.requests > 10
    assert 0.9 <= result.duration_s <= 2.0
    assert 0 < result.latency_ms["p50"] <= result.latency_ms["p95"] <= result.latency_ms["p99"]
    assert result.latency_ms["p99"] <= result.latency_ms["max"]
    assert 0 < result.client_cpu_s < 2 * result.duration_s


def test_load_generator_counts_error_statuses(naive_server: servers.RunningServer, tmp_path: Path) -> None:
    bad = replace(naive_json(np.zeros((28, 28), dtype=np.uint8)), body=b'{"image": [[1.0]]}')
    result = run_load("asyncio", naive_server.url, bad, write_body(bad, tmp_path), concurrency=2, duration=0.5)
    assert result.requests > 0
    assert result.status_errors == result.requests
    assert result.requests_per_s == 0


def test_process_cpu_grows_while_a_child_computes() -> None:
    """The child spins until it has used 0.3 s of CPU, however busy the machine, then waits to be measured."""
    spin = ("import sys, time\nwhile time.process_time() < 0.3: pass\nprint('done', flush=True)\nsys.stdin.read()")
    machine_before = machine_cpu_times()
    child = subprocess.Popen([sys.executable, "-c", spin], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline() == "done\n"
        used = process_tree_cpu_seconds(child.pid)
        machine_after = machine_cpu_times()
    finally:
        child.communicate("", timeout=30)
    assert 0.25 <= used <= 1.5  # the spin (/proc counts in clock ticks) and the interpreter's start-up
    assert machine_after.busy_s - machine_before.busy_s >= 0.25
    assert machine_after.total_s > machine_before.total_s


def test_v2_binary_request_and_response_round_trip(images: np.ndarray) -> None:
    workload = v2_binary(images[:3], MODEL)
    header_length = int(workload.headers["Inference-Header-Content-Length"])
    header = json.loads(workload.body[:header_length])
    assert header["inputs"][0]["shape"] == [3, 1, 28, 28]
    tensor = np.frombuffer(workload.body[header_length:], dtype="<f4").reshape(3, 1, 28, 28)
    assert np.allclose(tensor * 255, images[:3, None], atol=1e-3)

    probabilities = np.full((3, 10), 0.1, dtype="<f4")
    response_header = json.dumps({"outputs": [
        {"name": "logits", "datatype": "FP32", "shape": [3, 10], "parameters": {"binary_data_size": 120}},
        {"name": "probabilities", "datatype": "FP32", "shape": [3, 10], "parameters": {"binary_data_size": 120}},
    ]}).encode()
    body = response_header + np.zeros((3, 10), dtype="<f4").tobytes() + probabilities.tobytes()
    decoded = decode_v2_binary(body, {"inference-header-content-length": str(len(response_header))}, 3)
    assert np.array_equal(decoded, probabilities)


def _sample(requests_per_s: float, images: int = 1, p50: float = 1.0, p99: float = 10.0) -> Sample:
    return Sample(requests_per_s=requests_per_s, images_per_s=requests_per_s * images, p50_ms=p50, p95_ms=p99 / 2,
                  p99_ms=p99, errors=0, server_cpu=1.0, client_cpu=0.1, other_cpu=0.0)


def _results(service_v1_rps: float, service_p99: float) -> Results:
    def point(server: str, workload: str, concurrency: int, samples: list[Sample], images: int = 1) -> Point:
        return Point(server, server, workload, workload, concurrency, images, samples)

    return Results(
        date="2026-01-01 00:00 UTC",
        machine={"cpu_model": "test CPU", "cpus": 2, "available_cpus": 2, "os": "Linux", "python": "3.11",
                 "onnxruntime": "1.0"},
        settings={"model": MODEL, "duration_s": 1.0, "runs": 3, "load_tool": "wrk"},
        limit_runs={1: [{"2 threads": 3000.0, "1 thread": 4000.0}] * 3,
                    256: [{"2 threads": 5000.0, "1 thread": 3500.0}, {"2 threads": 5100.0, "1 thread": 3000.0},
                          {"2 threads": 4900.0, "1 thread": 3600.0}]},
        points=[
            point("naive", "naive-json", 64, [_sample(900, p99=130), _sample(1000, p99=120), _sample(1100, p99=200)]),
            point("batching-on", "v1-json", 64, [_sample(service_v1_rps, p99=service_p99)] * 3),
            point("batching-on", "v2-binary-256", 16, [_sample(17.0, images=256)] * 3, images=256),
        ])


def test_report_takes_medians_ratios_and_targets() -> None:
    results = _results(service_v1_rps=2500, service_p99=100)
    add_ratios(results)
    results.targets = evaluate_targets(results)
    naive, v1, batch = results.points
    assert results.limit == {1: 4000.0, 256: 5000.0}
    assert results.limit_by_config[256] == {"2 threads": 5000.0, "1 thread": 3500.0}
    assert naive.median.requests_per_s == 1000 and naive.median.p99_ms == 130
    assert v1.vs_naive == pytest.approx(2.5)
    assert v1.vs_limit == pytest.approx(2500 / 4000)
    assert batch.vs_limit == pytest.approx(17 * 256 / 5000)
    by_title = {target.title.split(":")[0] + target.required: target.met for target in results.targets}
    assert by_title["v1-json at concurrency 642×"] is True
    assert by_title["v1-json at concurrency 64≤ 130.00 ms"] is True
    assert by_title["v2-binary-256≥ 90%"] is False  # 4,352 of 5,000 images/s: 87%
    assert by_title["v2-binary at concurrency 643×"] is None


def test_report_flags_missed_targets_in_the_markdown() -> None:
    results = _results(service_v1_rps=1500, service_p99=150)
    add_ratios(results)
    results.targets = evaluate_targets(results)
    markdown = render_markdown(results)
    assert "| batching-on | v1-json | 64 | 1,500 | 1,500 |" in markdown
    assert "| v1-json at concurrency 64: req/s ≥ 2× naive | 1.50× (1,500 req/s) | 2× | **no** |" in markdown
    assert "| v1-json at concurrency 64: p99 ≤ naive's | 150.00 ms | ≤ 130.00 ms | **no** |" in markdown
    assert "test CPU, 2 CPUs" in markdown
    assert "| batch | images/s | 2 threads | 1 thread |" in markdown
    assert "| 256 | 5,000 | 5,000 | 3,500 |" in markdown
    assert "Other processes" not in markdown


def test_report_calls_out_a_busy_machine() -> None:
    results = _results(service_v1_rps=1500, service_p99=150)
    results.points[0].runs[0] = replace(results.points[0].runs[0], other_cpu=1.2)
    assert "Other processes kept 0.13 cores busy on average during the load points (up to 1.20)" in \
        render_markdown(results)


def test_saved_results_render_the_same_table() -> None:
    results = _results(service_v1_rps=2500, service_p99=100)
    add_ratios(results)
    results.targets = evaluate_targets(results)
    saved = json.loads(json.dumps(results.to_json()))
    assert render_markdown(results_from_json(saved)) == render_markdown(results)


def test_update_document_replaces_only_the_generated_block(tmp_path: Path) -> None:
    document = tmp_path / "benchmark.md"
    update_document(document, "first table\n")
    assert document.read_text() == f"{DOC_START}\nfirst table\n{DOC_END}\n"
    document.write_text(f"# Benchmark\n\nprose\n\n{DOC_START}\nold\n{DOC_END}\n\nmore prose\n")
    update_document(document, "new table\n")
    assert document.read_text() == f"# Benchmark\n\nprose\n\n{DOC_START}\nnew table\n{DOC_END}\n\nmore prose\n"


def test_a_short_run_measures_every_point_against_real_servers(tmp_path: Path, images: np.ndarray) -> None:
    """With an anchor asked for but not built: it is skipped with one line, and the rest is measured."""
    # 3 s a point: on a machine busy with other work a 256-image request can take more than a second
    plan = BenchPlan(model=MODEL, models_dir=MODELS_DIR, out_dir=tmp_path, duration=3.0, runs=1, concurrencies=(2,),
                     servers=("naive", "batching-on"), workloads=("v1-json", "v2-binary-256", "grpc"), limit_batches=(1, 256),
                     warmup_s=0.5, document=tmp_path / "benchmark.md", anchors=("triton",),
                     anchors_root=tmp_path / "anchors")
    results = run_benchmark(plan, images)
    assert list(results.settings["skipped"]) == ["triton"]
    assert results.settings["skipped"]["triton"].startswith(
        f"triton: skipped, no environment in {tmp_path / 'anchors' / 'pytriton'}")
    assert results.anchor_targets == []
    assert [(point.server, point.workload) for point in results.points] == [
        ("naive", "naive-json"), ("batching-on", "v1-json"), ("batching-on", "v2-binary-256"), ("batching-on", "grpc")]
    for point in results.points:
        assert len(point.runs) == 1
        assert point.median.errors == 0
        assert point.median.requests_per_s > 0
        assert point.median.server_cpu > 0
        assert point.vs_naive is not None and point.vs_limit is not None
    assert set(results.limit_by_config[256]) == {config.name for config in inprocess.distinct_configs()}
    assert results.limit[256] == max(results.limit_by_config[256].values()) > 0

    json_path, markdown_path = write_results(results, plan)
    saved = json.loads(json_path.read_text())
    assert {point["workload"] for point in saved["points"]} == {"naive-json", "v1-json", "v2-binary-256", "grpc"}
    assert saved["points"][2]["median"]["images_per_s"] == pytest.approx(
        256 * saved["points"][2]["median"]["requests_per_s"])
    assert markdown_path.read_text() in (tmp_path / "benchmark.md").read_text()
    assert f"- {results.settings['skipped']['triton']}" in markdown_path.read_text()
    assert results.settings["elapsed_s"] >= 1
    assert f"the whole run took {results.settings['elapsed_s'] / 60:.1f} minutes." in markdown_path.read_text()


def test_scaling_layouts_keep_the_service_and_wrk_on_separate_cores_then_show_sharing() -> None:
    four = layouts([0, 1, 2, 3])
    assert [(layout.server_cpus, layout.workers, layout.client_cpus) for layout in four] == [
        ((0,), 1, (1, 2, 3)), ((0, 1), 2, (2, 3)), ((0, 1, 2), 3, (3,)),
        ((0,), 4, (1, 2, 3)), ((0, 1, 2, 3), 4, (0, 1, 2, 3))]
    assert four[-1].title == "4 workers on 4 cores (shared with wrk)"
    assert [(layout.server_cpus, layout.workers) for layout in layouts([5])] == [((5,), 1)]


@pytest.mark.skipif(not shutil.which("taskset"), reason="taskset (util-linux) is not installed")
def test_scaling_run_pins_real_workers_and_writes_its_table(tmp_path: Path) -> None:
    cpus = sorted(os.sched_getaffinity(0))
    assert scaling.main(MODELS_DIR, "lenet-pytorch", duration=1.0, runs=1, out=tmp_path) == 0
    document = json.loads((tmp_path / "scaling.json").read_text())
    assert [point["layout"]["workers"] for point in document["points"]] == \
        [layout.workers for layout in layouts(cpus)]
    assert all(point["requests_per_s"] > 0 and point["errors"] == 0 for point in document["points"])
    assert "× 1 worker" in (tmp_path / "scaling.md").read_text()
