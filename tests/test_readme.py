"""The README's five-minute tour, run for real: every ```bash and ```python block between
<!-- tour:start --> and <!-- tour:end --> runs, in order, against a real `mnist-serve serve` on free
loopback ports. Only the ports are rewritten (8000 and 8001 to the server's HTTP and gRPC ports,
8080 and 8081 to free ones for the tour's second server). Every HTTP answer must be a success (a
curl config adds a status line to each answer; the shell stops at the first failing command) and
carry the digit the README promises. Every other command of the README is listed in NOT_RUN with
the reason it cannot run here, and a test fails when a command is neither run nor listed."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import onnx
import pytest

from bench.servers import RunningServer, free_port
from contract.metadata import ModelMetadata
from tests.conftest import MODELS_DIR, REPO_ROOT, start_server

README = REPO_ROOT / "README.md"
TOUR = re.compile(r"<!-- tour:start -->(.*?)<!-- tour:end -->", re.DOTALL)
FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.DOTALL | re.MULTILINE)
PORT = re.compile(r"\b(8000|8001|8080|8081)\b")
STATUS = re.compile(r"^\[http (\d{3})\]$", re.MULTILINE)
BLOCK_TIMEOUT_S = 60

# Commands outside the tour, by how they start, and why the test does not run them.
NOT_RUN: dict[str, str] = {
    "python3 -m venv .venv": "creates and installs a virtual environment; the test runs inside the one it builds",
    "mnist-serve serve ": "starts the server in the foreground; the test starts the same command itself "
                          "(tests/conftest.py start_server) on a free port",
    "docker compose ": "needs a Docker engine and minutes of image builds; CI runs the compose deployment for "
                       "real in deploy/e2e",
    "sudo apt-get install": "installs system packages (.ci/run does it in CI)",
    "pytest": "the test suite itself",
}


def readme() -> str:
    return README.read_text()


def tour() -> str:
    found = TOUR.findall(readme())
    assert len(found) == 1, "README.md must mark its tour with one <!-- tour:start --> ... <!-- tour:end -->"
    return found[0]


def blocks(text: str) -> list[tuple[str, str]]:
    return [(language, body) for language, body in FENCE.findall(text)]


def commands(script: str) -> list[str]:
    """Shell commands of a block: continuation lines joined, comments and blank lines left out."""
    joined = re.sub(r"\\\n\s*", " ", script)
    return [line.strip() for line in joined.splitlines() if line.strip() and not line.strip().startswith("#")]


# ---- what each tour block must answer ---------------------------------------------------------

def json_answers(output: str) -> list[object]:
    answers = []
    for line in output.splitlines():
        if line.startswith(("{", "[")):
            answers.append(json.loads(line))
    return answers


def predicted(answer: dict) -> int:
    if "predictions" in answer:
        return answer["predictions"][0]["label"]
    if "prediction" in answer:
        return answer["prediction"]["label"]
    probabilities = answer["outputs"][0]["data"]
    return probabilities.index(max(probabilities))


def expect_ready(output: str, ports: dict[str, int]) -> None:
    (answer,) = json_answers(output)
    assert answer["ready"] is True and answer["refused"] == {}


def expect_v1_digits(output: str, ports: dict[str, int]) -> None:
    answers = json_answers(output)
    assert [predicted(answer) for answer in answers] == [7, 4, 3, 3]  # seven.json, photo-four.jpg, three.png twice
    assert answers[2]["model"] == "lenet-tensorflow" and answers[2]["version"] == 1
    assert [layer["name"] for layer in answers[3]["layers"]] == ["fc2"]


def expect_v2_seven(output: str, ports: dict[str, int]) -> None:
    (answer,) = json_answers(output)
    assert answer["id"] == "seven" and answer["model_name"] == "cnn-pytorch" and predicted(answer) == 7


def expect_httpx_client(output: str, ports: dict[str, int]) -> None:
    first, second = output.splitlines()
    assert first.startswith("7 [{'label': 7")
    assert second == "cnn-tensorflow 4"


def expect_triton_clients(output: str, ports: dict[str, int]) -> None:
    assert output.splitlines() == [f"127.0.0.1:{ports['8000']} [7]", f"127.0.0.1:{ports['8001']} [7]"]


def expect_metrics(output: str, ports: dict[str, int]) -> None:
    lines = output.splitlines()
    assert all(line.startswith("mnist_serve_requests_total{") for line in lines)
    assert any('endpoint="/v1/predict"' in line and 'protocol="http"' in line and 'status="200"' in line
               for line in lines)
    assert any('endpoint="/inference.GRPCInferenceService/ModelInfer"' in line and 'protocol="grpc"' in line
               and 'status="OK"' in line for line in lines)  # the tritonclient block came before


def expect_hot_reload(output: str, ports: dict[str, int]) -> None:
    loaded, index = json_answers(output)[:2]
    assert loaded["versions"] == [1, 2, 3]
    assert {(entry["version"], entry["state"]) for entry in index} == {("1", "READY"), ("2", "READY"), ("3", "READY")}
    log = [json.loads(line) for line in output.splitlines() if line.startswith('{"time"')]  # one JSON object a line
    messages = [entry["message"] for entry in log]
    assert messages[:2] == ["SIGHUP: reloading models from disk", "reload cnn-pytorch: ok"], messages
    assert messages[2].startswith("SIGTERM received: not ready, draining"), messages
    assert messages[-1].startswith("Finished server process"), messages


# Each tour block, by a line only it has, and what its output must show.
EXPECTED: dict[str, Callable[[str, dict[str, int]], None]] = {
    "curl -s http://127.0.0.1:8000/readyz": expect_ready,
    "-d @docs/examples/seven.json": expect_v1_digits,
    "-d @docs/examples/seven-v2.json": expect_v2_seven,
    "import httpx": expect_httpx_client,
    "import tritonclient.grpc as grpcclient": expect_triton_clients,
    "/metrics": expect_metrics,
    "--admin-token s3cret": expect_hot_reload,
}


# ---- running it --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tour_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    server = start_server(tmp_path_factory.mktemp("tour-server"))
    yield server
    server.stop()


def run_block(language: str, body: str, ports: dict[str, int], workdir: Path) -> str:
    code = PORT.sub(lambda match: str(ports[match.group(1)]), body)
    curl_home = workdir / "curl"
    curl_home.mkdir(exist_ok=True)
    (curl_home / ".curlrc").write_text('write-out = "\\n[http %{http_code}]\\n"\n')
    env = {**os.environ, "CURL_HOME": str(curl_home), "TMPDIR": str(workdir),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    if language == "bash":
        # the scaffolding around the README's lines: stop at the first failure, and never leave a
        # server the block started in the background behind
        argv = ["bash", "-c", "set -euo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n" + code]
    else:
        argv = [sys.executable, "-c", code]
    done = subprocess.run(argv, check=False, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=BLOCK_TIMEOUT_S)
    assert done.returncode == 0, f"{language} block failed ({done.returncode}):\n{code}\n{done.stdout}\n{done.stderr}"
    statuses = STATUS.findall(done.stdout)
    assert all(status.startswith("2") for status in statuses), f"HTTP failures {statuses}:\n{done.stdout}"
    return STATUS.sub("", done.stdout).replace("\n\n", "\n").strip()


def which_expectation(body: str) -> Callable[[str, dict[str, int]], None]:
    matches = [check for marker, check in EXPECTED.items() if marker in body]
    assert len(matches) == 1, f"a tour block must match exactly one entry of EXPECTED, this one matches {len(matches)}:\n{body}"
    return matches[0]


def test_the_tour_runs_and_answers_what_it_says(tour_server: RunningServer, tmp_path: Path) -> None:
    ports = {"8000": tour_server.spec.port, "8001": int(tour_server.env["MNIST_SERVE_GRPC_PORT"]),
             "8080": free_port(), "8081": free_port()}
    tour_blocks = blocks(tour())
    assert [language for language, _ in tour_blocks] == ["bash", "bash", "bash", "python", "python", "bash", "bash"]
    used = set()
    for language, body in tour_blocks:
        check = which_expectation(body)
        used.add(check)
        check(run_block(language, body, ports, tmp_path), ports)
    assert used == set(EXPECTED.values())


def test_the_tour_pages_answer(tour_server: RunningServer) -> None:
    """The links into the running server (the page, /docs) answer 200 with HTML."""
    paths = re.findall(r"<http://127\.0\.0\.1:8000(/[^>]*)>", tour())
    assert {"/", "/docs"} <= set(paths)
    for path in paths:
        answer = httpx.get(tour_server.url + path, timeout=10)
        assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/html"), path


def test_every_other_command_is_run_elsewhere_or_listed() -> None:
    """Nothing is skipped silently: each command outside the tour is in NOT_RUN, and each NOT_RUN entry
    still names a command of the README."""
    outside = TOUR.sub("", readme())
    listed = []
    for language, body in blocks(outside):
        if language != "bash":
            continue
        for command in commands(body):
            reasons = [prefix for prefix in NOT_RUN if command.startswith(prefix)]
            assert reasons, f"README command neither run by this test nor listed in NOT_RUN: {command}"
            listed.extend(reasons)
    assert set(listed) == set(NOT_RUN), f"NOT_RUN entries no README command uses: {set(NOT_RUN) - set(listed)}"
    assert all(language in ("bash", "python") for language, _ in blocks(tour()))


def test_the_models_table_matches_the_committed_models() -> None:
    """The accuracy the README quotes is what each committed model's metadata records."""
    rows = re.findall(r"^\| `([a-z0-9-]+)`[^|]*\|([^|]*)\|([^|]*)\|$", readme(), re.MULTILINE)
    quoted = {(name, version): cell.strip() for name, first, second in rows
              for version, cell in ((1, first), (2, second)) if cell.strip()}
    committed = {}
    for model_file in sorted(MODELS_DIR.glob("*/*/model.onnx")):
        props = {prop.key: prop.value for prop in onnx.load(model_file, load_external_data=False).metadata_props}
        accuracy = ModelMetadata.from_props(props).test_accuracy
        committed[(model_file.parent.parent.name, int(model_file.parent.name))] = f"{accuracy * 100:.2f} %"
    assert quoted == committed
