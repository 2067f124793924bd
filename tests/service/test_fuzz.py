"""An OpenAPI-driven fuzz run (schemathesis) against a real server: requests that fit the schema
and requests that break it, for every operation in /openapi.json. No 5xx, no hang, every error
a {"error": ...} body, and the server alive and correct afterwards."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from hypothesis import strategies as st
from schemathesis import APIOperation, Case, GenerationMode

from tests.conftest import ServerProcess
from tests.service.servers import MODEL_NAME, start_private_server

EXAMPLES_PER_OPERATION = 20  # per generation mode; 29 operations -> ~1,000 requests
ADMIN_TOKEN = "fuzz-token"
ADMIN_AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
# Half the cases use the served model's real name and version, so that they reach the body
# decoders and the model; the other half fuzz the path parameters too.
REAL_PATH = {"name": MODEL_NAME, "version": 1, "layer": "conv1"}
REQUEST_TIMEOUT_S = 15.0  # a hang fails the run
RUN_BUDGET_S = 90.0  # past it, on a slow machine, each remaining operation gets one request only


@pytest.fixture(scope="module")
def fuzzed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = start_private_server(tmp_path_factory.mktemp("fuzz"), {
        "MNIST_SERVE_MAX_IMAGES_PER_REQUEST": "8", "MNIST_SERVE_ACCESS_LOG": "false", "MNIST_SERVE_ADMIN_TOKEN": ADMIN_TOKEN})
    yield server
    assert server.stop() == 0


def check_response(case: Case, response: requests.Response) -> None:
    label = f"{case.method} {case.formatted_path}"
    assert response.status_code < 500, f"{label} -> {response.status_code}: {response.text[:500]}\n{case.as_curl_command()}"
    assert "x-request-id" in response.headers, label
    if response.status_code >= 400:
        body = response.json()
        assert set(body) == {"error"} and isinstance(body["error"], str), f"{label}: {body}"
        assert "Traceback" not in body["error"], label


def is_admin(operation: APIOperation) -> bool:
    return operation.path.startswith("/v2/repository")


def admin_headers(operation: APIOperation) -> dict[str, str]:
    return ADMIN_AUTH if is_admin(operation) else {}


def case_strategy(operation: APIOperation, mode: GenerationMode) -> st.SearchStrategy[Case]:
    """Cases with fuzzed path parameters, or (outside the admin routes, which would unload the
    model) with the served model's real ones."""
    fuzzed = operation.as_strategy(generation_mode=mode)
    names = set(re.findall(r"{(\w+)}", operation.path))
    if not names or is_admin(operation):
        return fuzzed
    real = operation.as_strategy(generation_mode=mode, path_parameters={key: REAL_PATH[key] for key in names})
    return st.one_of(real, fuzzed)


def test_openapi_fuzz_gives_no_server_errors(fuzzed_server: ServerProcess) -> None:
    url = fuzzed_server.url
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json", timeout=10)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 25, "the OpenAPI document lost its operations"
    session = requests.Session()
    calls: dict[str, int] = {}
    unbreakable: list[str] = []
    started = time.monotonic()
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, derandomize=True, database=None,
                      phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
            @given(case=case_strategy(operation, mode))
            def fuzz(case: Case) -> None:
                if time.monotonic() - started > RUN_BUDGET_S and operation.label in calls:
                    return
                response = case.call(base_url=url, session=session, timeout=REQUEST_TIMEOUT_S, headers=admin_headers(operation))
                calls[operation.label] = calls.get(operation.label, 0) + 1
                check_response(case, response)

            try:
                fuzz()
            except Unsatisfiable:
                if mode is GenerationMode.POSITIVE:
                    raise
                unbreakable.append(operation.label)  # no parameters or body to get wrong
    assert sum(calls.values()) >= 5 * len(operations) and len(calls) == len(operations), calls
    assert not any("predict" in label or "infer" in label for label in unbreakable), unbreakable
    assert_still_serving(url)
    reload = httpx.post(f"{url}/v2/repository/models/{MODEL_NAME}/load", headers=ADMIN_AUTH, timeout=60)
    assert reload.status_code == 200 and reload.json()["versions"] == [1]


def assert_still_serving(url: str) -> None:
    with httpx.Client(base_url=url, timeout=10) as http:
        assert http.get("/healthz").status_code == 200
        assert http.get("/readyz").status_code == 200
        seven = [[0] * 28 for _ in range(28)]
        for row in range(6, 22):
            seven[row][14] = 255
        answer = http.post(f"/v1/models/{MODEL_NAME}/predict", json={"image": seven})
        assert answer.status_code == 200
        assert len(answer.json()["predictions"][0]["probabilities"]) == 10
