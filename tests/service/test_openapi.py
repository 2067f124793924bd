"""The OpenAPI document and the served behaviour agree on every query option of every operation:
each documented bound, enum value and boolean is accepted, and just past it is a 422 naming the option."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.service.conftest import in_process_app

BLANK = {"image": [[0] * 28 for _ in range(28)]}
PATH_VALUES = {"name": "lenet-pytorch", "version": "1", "layer": "conv1"}


@pytest.fixture(scope="module")
def client(lenet_models: Path) -> Iterator[TestClient]:
    with in_process_app(lenet_models) as test_client:
        yield test_client


def operations(client: TestClient) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, methods in client.app.openapi()["paths"].items():
        for method, operation in methods.items():
            yield method, path.format(**PATH_VALUES), operation


def schema_of(parameter: dict[str, Any]) -> dict[str, Any]:
    schema = parameter["schema"]
    choices = [option for option in schema.get("anyOf", [schema]) if option.get("type") != "null"]
    return {**choices[0], "nullable": len(choices) < len(schema.get("anyOf", [schema]))}


def cases(schema: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(values the schema allows, values just outside it)."""
    kind = schema.get("type")
    if "enum" in schema:
        return [str(value) for value in schema["enum"]], ["no-such-value"]
    if kind == "boolean":
        return ["true", "false", "1", "0"], ["maybe"]
    if kind in ("integer", "number"):
        low, high = schema.get("minimum"), schema.get("maximum")
        step = 1 if kind == "integer" else 0.5
        accepted = [str(value) for value in (low, high) if value is not None] or ["1"]
        refused = [str(low - step)] if low is not None else []
        refused += [str(high + step)] if high is not None else []
        return accepted, refused + ["x"]
    return [], []


def call(client: TestClient, method: str, path: str, query: dict[str, str]):
    if method == "post":
        return client.post(path, params=query, json=BLANK)
    return client.request(method.upper(), path, params=query)


def documented_options(client: TestClient) -> list[tuple[str, str, str, dict[str, Any]]]:
    return [(method, path, parameter["name"], schema_of(parameter))
            for method, path, operation in operations(client)
            for parameter in operation.get("parameters", []) if parameter["in"] == "query"]


def test_every_operation_with_options_is_checked(client: TestClient) -> None:
    documented = {(method, path) for method, path, _, _ in documented_options(client)}
    assert len(documented) >= 11  # predict, activations and explain (x3 paths) and weights (x2)
    assert all(cases(schema) != ([], []) for *_, schema in documented_options(client) if schema.get("type") != "string"
               or "enum" in schema)


def test_documented_values_are_accepted_and_values_past_them_are_422(client: TestClient) -> None:
    checked = 0
    for method, path, name, schema in documented_options(client):
        accepted, refused = cases(schema)
        for value in accepted:
            response = call(client, method, path, {name: value})
            assert response.status_code != 422 and response.status_code < 500, (path, name, value, response.text)
            checked += 1
        for value in refused:
            response = call(client, method, path, {name: value})
            assert response.status_code == 422, (path, name, value, response.text)
            assert f"query.{name}" in response.json()["error"], response.text
            checked += 1
    assert checked > 100


def test_documented_defaults_are_the_served_defaults(client: TestClient) -> None:
    for method, path, name, schema in documented_options(client):
        if name == "top_k" and path.endswith("/predict"):
            body = call(client, method, path, {}).json()
            assert len(body["predictions"][0]["top_k"]) == schema["default"]
        if name == "include_input" and method == "post":
            body = call(client, method, path, {}).json()
            assert (("input" in body) or ("inputs" in body)) == schema["default"], path
