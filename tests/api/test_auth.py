"""Bearer tokens: every endpoint but GET /health and GET /openapi.json answers 401 without a valid one."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask

from tests.api.conftest import assert_error
from tests.conftest import ApiClient

BATCH_BODY = {"name": "b", "profile_ids": [1], "processor": "noop", "parameters": {}}

PROTECTED = [
    ("GET", "/profiles", None),
    ("POST", "/profiles", {"name": "eve"}),
    ("GET", "/profiles/1", None),
    ("GET", "/batches", None),
    ("POST", "/batches", BATCH_BODY),
    ("GET", "/batches/1", None),
    ("GET", "/batches/1/items", None),
    ("GET", "/batches/1/logs", None),
    ("POST", "/batches/1/stop", None),
    ("POST", "/batches/2/cancel", None),
    ("POST", "/batches/2/move", {"position": 1}),
    ("GET", "/queue", None),
    ("POST", "/queue/start", None),
    ("POST", "/batches/1/resume", None),
    ("POST", "/batches/1/retry", None),
    ("POST", "/queue/drain", None),
    ("GET", "/queue/policy", None),
    ("PUT", "/queue/policy", {"on_failure": "pause", "pause_after_failures": 1}),
    ("PATCH", "/profiles/1", {"name": "eve"}),
    ("DELETE", "/profiles/1", None),
    ("POST", "/profiles/import", None),
    ("GET", "/batches/1/logs.txt", None),
    ("GET", "/batches/1/logs.jsonl", None),
    ("GET", "/batches/1/callbacks", None),
]

BAD_HEADERS = [
    pytest.param({}, id="no_header"),
    pytest.param({"Authorization": "Bearer bq_not-a-real-token"}, id="wrong_token"),
    pytest.param({"Authorization": "Basic {token}"}, id="basic_scheme"),
]
MORE_BAD_HEADERS = [
    pytest.param({"Authorization": ""}, id="empty_header"),
    pytest.param({"Authorization": "Bearer"}, id="bearer_without_token"),
    pytest.param({"Authorization": "Bearer "}, id="bearer_blank_token"),
    pytest.param({"Authorization": "Token {token}"}, id="token_scheme"),
    pytest.param({"Authorization": "{token}"}, id="token_without_scheme"),
    pytest.param({"Authorization": "Bearer {token}x"}, id="token_with_extra_character"),
    pytest.param({"Authorization": "Bearer {token_prefix}"}, id="token_prefix"),
]


def _fill(headers: dict[str, str], token: str) -> dict[str, str]:
    return {key: value.format(token=token, token_prefix=token[:-1]) for key, value in headers.items()}


@pytest.fixture
def setup(api: ApiClient, profile_ids: list[int]) -> ApiClient:
    """A profile and a running and a queued batch, so that only the token can be at fault."""
    api.batch(profile_ids, name="running")
    api.batch(profile_ids, name="queued")
    return api


@pytest.mark.parametrize("headers", BAD_HEADERS)
@pytest.mark.parametrize("method, path, body", PROTECTED)
def test_protected_endpoint_without_a_valid_token_is_401_and_changes_nothing(
    setup: ApiClient,
    token: str,
    counts: Any,
    method: str,
    path: str,
    body: Any,
    headers: dict[str, str],
) -> None:
    before = counts()
    response = setup.client.open(f"/api/v1{path}", method=method, json=body, headers=_fill(headers, token))
    assert_error(response, 401)
    assert counts() == before


@pytest.mark.parametrize("headers", MORE_BAD_HEADERS)
@pytest.mark.parametrize("method, path, body", [PROTECTED[4], PROTECTED[11]])
def test_protected_endpoint_with_a_malformed_authorization_is_401(
    setup: ApiClient,
    token: str,
    counts: Any,
    method: str,
    path: str,
    body: Any,
    headers: dict[str, str],
) -> None:
    before = counts()
    response = setup.client.open(f"/api/v1{path}", method=method, json=body, headers=_fill(headers, token))
    assert_error(response, 401)
    assert counts() == before


@pytest.mark.parametrize("method, path, body", PROTECTED)
def test_protected_endpoint_with_the_token_is_served(setup: ApiClient, method: str, path: str, body: Any) -> None:
    response = setup.client.open(f"/api/v1{path}", method=method, json=body, headers=setup.headers)
    created = {("POST", "/profiles"), ("POST", "/batches")}
    # Past the token check: the setup's batches use profile 1, and an import needs a file's Content-Type.
    refused = {
        ("POST", "/queue/start"): 409,
        ("DELETE", "/profiles/1"): 409,
        ("POST", "/profiles/import"): 400,
        ("POST", "/batches/1/resume"): 409,  # batch 1 runs
        ("POST", "/batches/1/retry"): 409,
        ("PUT", "/queue/policy"): 403,  # the fixture's token is an operator's; the policy needs admin
    }
    expected = refused.get((method, path), 201 if (method, path) in created else 200)
    assert response.status_code == expected, (response.status_code, response.get_json())


def test_every_api_route_but_health_and_openapi_is_protected(app: Flask) -> None:
    """A new endpoint must join PROTECTED (or be deliberately open)."""
    routes = {
        (
            method,
            rule.rule.removeprefix("/api/v1").replace("<int:batch_id>", "{id}").replace("<int:profile_id>", "{id}"),
        )
        for rule in app.url_map.iter_rules()
        if rule.rule.startswith("/api/v1/")
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }
    tested = {(method, path.replace("/1", "/{id}").replace("/2", "/{id}")) for method, path, _ in PROTECTED}
    assert routes - tested == {("GET", "/health"), ("GET", "/openapi.json")}
    assert tested <= routes


@pytest.mark.parametrize("path", ["/health", "/openapi.json"])
def test_open_endpoint_needs_no_token(api: ApiClient, path: str) -> None:
    response = api.client.get(f"/api/v1{path}")
    assert response.status_code in (200, 503)
    assert response.status_code != 401


def test_token_scheme_is_case_insensitive(api: ApiClient, token: str) -> None:
    response = api.client.get("/api/v1/queue", headers={"Authorization": f"bearer {token}"})
    assert response.status_code == 200
