"""The role matrix: every route of the app, for each role and for a client with no credentials.

The table below is the one statement of who may use what. Routes come from the app's own
url_map (and openapi.json), so a route added without an entry here fails
test_every_route_is_in_the_table, and a route whose guard disagrees with its entry fails
test_each_route_admits_exactly_its_roles.
"""

from __future__ import annotations

import re

import pytest
from flask import Flask
from flask.testing import FlaskClient

from app.models import Role
from tests.conftest import PASSWORD, make_token, make_user, reset_tables

V, OP, A, P = "viewer", "operator", "admin", "public"
API = "/api/v1"

EXPECTED: dict[tuple[str, str], str] = {
    # the API
    ("GET", f"{API}/health"): P,
    ("GET", f"{API}/openapi.json"): P,
    ("GET", f"{API}/batches"): V,
    ("POST", f"{API}/batches"): OP,
    ("GET", f"{API}/batches/<int:batch_id>"): V,
    ("GET", f"{API}/batches/<int:batch_id>/items"): V,
    ("GET", f"{API}/batches/<int:batch_id>/logs"): V,
    ("GET", f"{API}/batches/<int:batch_id>/logs.txt"): V,
    ("GET", f"{API}/batches/<int:batch_id>/logs.jsonl"): V,
    ("GET", f"{API}/batches/<int:batch_id>/callbacks"): V,
    ("POST", f"{API}/batches/<int:batch_id>/stop"): OP,
    ("POST", f"{API}/batches/<int:batch_id>/cancel"): OP,
    ("POST", f"{API}/batches/<int:batch_id>/move"): OP,
    ("POST", f"{API}/batches/<int:batch_id>/resume"): OP,
    ("POST", f"{API}/batches/<int:batch_id>/retry"): OP,
    ("GET", f"{API}/profiles"): V,
    ("POST", f"{API}/profiles"): OP,
    ("GET", f"{API}/profiles/<int:profile_id>"): V,
    ("PATCH", f"{API}/profiles/<int:profile_id>"): OP,
    ("DELETE", f"{API}/profiles/<int:profile_id>"): OP,
    ("POST", f"{API}/profiles/import"): OP,
    ("GET", f"{API}/queue"): V,
    ("POST", f"{API}/queue/start"): OP,
    ("POST", f"{API}/queue/drain"): OP,
    ("GET", f"{API}/queue/policy"): V,
    ("PUT", f"{API}/queue/policy"): A,
    # the pages
    ("GET", "/static/<path:filename>"): P,
    ("GET", "/login"): P,
    ("POST", "/login"): P,
    ("POST", "/logout"): P,
    ("GET", "/live/events"): V,
    ("GET", "/"): V,
    ("GET", "/batches"): V,
    ("POST", "/batches"): OP,
    ("GET", "/batches/new"): OP,
    ("GET", "/batches/<int:batch_id>"): V,
    ("GET", "/batches/<int:batch_id>/log"): V,
    ("GET", "/batches/<int:batch_id>/logs.txt"): V,
    ("GET", "/batches/<int:batch_id>/logs.jsonl"): V,
    ("GET", "/health-banner"): V,
    ("GET", "/batches/<int:batch_id>/stop"): OP,
    ("POST", "/batches/<int:batch_id>/stop"): OP,
    ("GET", "/batches/<int:batch_id>/cancel"): OP,
    ("POST", "/batches/<int:batch_id>/cancel"): OP,
    ("POST", "/batches/<int:batch_id>/resume"): OP,
    ("POST", "/batches/<int:batch_id>/retry"): OP,
    ("POST", "/batches/<int:batch_id>/move-up"): OP,
    ("POST", "/batches/<int:batch_id>/move-down"): OP,
    ("POST", "/batches/<int:batch_id>/move-top"): OP,
    ("POST", "/batches/<int:batch_id>/move"): OP,
    ("POST", "/queue/start"): OP,
    ("POST", "/queue/drain"): OP,
    ("POST", "/queue/policy"): A,
    ("GET", "/profiles"): V,
    ("POST", "/profiles"): OP,
    ("GET", "/profiles/<int:profile_id>/edit"): OP,
    ("POST", "/profiles/<int:profile_id>/edit"): OP,
    ("GET", "/profiles/<int:profile_id>/delete"): OP,
    ("POST", "/profiles/<int:profile_id>/delete"): OP,
    ("POST", "/profiles/import"): OP,
    ("GET", "/admin/tokens"): A,
    ("POST", "/admin/tokens"): A,
    ("POST", "/admin/tokens/revoke"): A,
    ("GET", "/admin/users"): A,
    ("POST", "/admin/users"): A,
    ("POST", "/admin/users/disable"): A,
    ("POST", "/admin/users/enable"): A,
    ("POST", "/admin/users/role"): A,
    # Prometheus: open to METRICS_ALLOWED_HOSTS (127.0.0.1, where the test client comes from), any token
    # from elsewhere (tests/metrics/test_access.py).
    ("GET", "/metrics"): P,
}
ROLES = [Role.VIEWER, Role.OPERATOR, Role.ADMIN]
# Arguments for the rules' variables: nothing needs to exist, the guard answers before any lookup.
ARGUMENTS = {"batch_id": "1", "profile_id": "1", "filename": "app.css"}


def _routes(app: Flask) -> set[tuple[str, str]]:
    return {
        (method, rule.rule)
        for rule in app.url_map.iter_rules()
        for method in rule.methods or ()
        if method not in {"HEAD", "OPTIONS"}
    }


def _openapi_rule(path: str) -> str:
    """`/batches/{batch_id}` as the url_map writes it."""
    return API + re.sub(r"\{(\w+)\}", lambda m: f"<{'path' if m[1] == 'filename' else 'int'}:{m[1]}>", path)


def test_every_route_is_in_the_table(app: Flask) -> None:
    routes = _routes(app)
    assert sorted(routes - EXPECTED.keys()) == [], "routes without an entry in EXPECTED: decide their role"
    assert sorted(EXPECTED.keys() - routes) == [], "entries for routes the app no longer has"


def test_every_route_openapi_describes_is_in_the_table(app: Flask) -> None:
    spec = app.test_client().get(f"{API}/openapi.json").get_json()
    described = {
        # A path with a server of its own (/metrics) is served at the root, not under /api/v1.
        (method.upper(), path if "servers" in item else _openapi_rule(path))
        for path, item in spec["paths"].items()
        for method in item
        if method in {"get", "post", "put", "patch", "delete"}
    }
    assert described, "openapi.json describes no path"
    assert sorted(described - EXPECTED.keys()) == []


def _url(rule: str) -> str:
    return re.sub(r"<(?:\w+:)?(\w+)>", lambda m: ARGUMENTS[m[1]], rule)


@pytest.fixture(scope="module")
def tokens(app: Flask) -> dict[str, str]:
    """A user and a token per role, made once for the module (scrypt makes users slow to make)."""
    reset_tables(app)
    made = {}
    for role in ROLES:
        make_user(app, role.value, role)
        made[role.value] = make_token(app, role.value, role)
    return made


@pytest.fixture
def clients(app: Flask, tokens: dict[str, str]) -> dict[str, tuple[FlaskClient, dict[str, str]]]:
    """A client per role, signed in to the pages and holding a token of that role, and one with nothing.

    Signed in afresh for each route: one of them is /logout.
    """
    made: dict[str, tuple[FlaskClient, dict[str, str]]] = {"anonymous": (app.test_client(), {})}
    for role, token in tokens.items():
        client = app.test_client()
        response = client.post("/login", data={"username": role, "password": PASSWORD})
        assert response.status_code == 302, response.get_data(as_text=True)
        made[role] = (client, {"Authorization": f"Bearer {token}"})
    return made


def _signed_out(response: object, is_api: bool) -> bool:
    status = getattr(response, "status_code", 0)
    if is_api or status == 401:
        return status == 401
    return status == 302 and "/login" in getattr(response, "headers", {}).get("Location", "")


@pytest.mark.parametrize(("method", "rule"), sorted(EXPECTED))
def test_each_route_admits_exactly_its_roles(
    clients: dict[str, tuple[FlaskClient, dict[str, str]]], method: str, rule: str
) -> None:
    needed = EXPECTED[(method, rule)]
    is_api = rule.startswith(API)
    outcomes = {}
    for name, (client, headers) in clients.items():
        response = client.open(_url(rule), method=method, headers=headers)
        outcomes[name] = response.status_code
        if needed == P:
            assert response.status_code not in (401, 403), (name, response.status_code)
        elif name == "anonymous":
            assert _signed_out(response, is_api), (name, response.status_code, response.headers.get("Location"))
            if is_api:
                assert response.get_json()["error"]["code"] == "unauthorized"
        elif Role(name).allows(Role(needed)):
            assert response.status_code != 403 and not _signed_out(response, is_api), (name, response.status_code)
        else:
            assert response.status_code == 403, (name, response.status_code)
            if is_api:
                assert response.get_json()["error"]["code"] == "forbidden"
            else:
                assert "Not allowed" in response.get_data(as_text=True)
        response.close()
