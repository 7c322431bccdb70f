"""schemathesis against the live app, from its own openapi.json: every check, every operation, a fixed seed.

The examples are derandomized and kept out of Hypothesis's example database, so
a run finds the same cases every time. Runs are recorded, not sent (the API
tests' `sent` fixture), and a stand-in worker's heartbeat keeps /health green:
nothing moves a batch behind the fuzzer's back. FUZZ_EXAMPLES sets the examples
per operation (`make fuzz` runs many more).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, settings
from schemathesis.openapi.checks import RejectedPositiveData
from schemathesis.specs.openapi.checks import positive_data_acceptance

from app.api.openapi import build_spec
from tests.conftest import HTTP_ALLOWED_HOSTS

# The API under /api/v1: /metrics (a text page at the root, its own server) has tests of its own (tests/metrics).
SPEC = build_spec(HTTP_ALLOWED_HOSTS)
SPEC["paths"] = {path: item for path, item in SPEC["paths"].items() if "servers" not in item}
# PostgreSQL text can't hold NUL, and the API refuses it everywhere (app/api/bodies.py).
schema = schemathesis.openapi.from_dict(
    SPEC, config=schemathesis.Config.from_dict({"generation": {"allow-x00": False}})
)
# JSON Lines is text too: sent as is, so the import sees what was generated.
schemathesis.serializer.alias("application/x-ndjson", "text/plain")
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "50"))
_token: list[str] = []

# Refusals of schema-valid requests that no OpenAPI 3.0 schema can rule out: references to rows
# that don't exist, rules between two query parameters, and a file's content. Each is the
# operation, the field named, and how its message starts; any other refusal fails the test.
UNSTATEABLE = {
    ("POST /batches", "profile_ids", "unknown profile ids"),
    ("POST /batches", "profile_tags", "no profile is tagged"),
    ("GET /batches", "created_before", "must be later than created_after"),
    ("GET /batches/{batch_id}/logs", "before", "give after or before, not both"),
    ("POST /profiles/import", "lines", ""),
}


@schema.auth(refresh_interval=None)
class Bearer:
    """The test's own token, applied the way schemathesis knows about (so it can also leave it out)."""

    def get(self, case: Any, ctx: Any) -> str:
        return _token[0] if _token else ""

    def set(self, case: Any, data: str, ctx: Any) -> None:
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}


@pytest.fixture(autouse=True)
def fuzz_token(token: str) -> Iterator[None]:
    _token[:] = [token]
    yield
    _token.clear()


def _unstateable(label: str, body: Any) -> bool:
    """Whether a 422 names only fields refused for a reason in UNSTATEABLE."""
    fields = (body or {}).get("error", {}).get("fields") or {}
    return bool(fields) and all(
        any(
            (label, name, start) in UNSTATEABLE
            and (start == "" or any(str(message).startswith(start) for message in messages))
            for start in {entry[2] for entry in UNSTATEABLE if entry[:2] == (label, name)}
        )
        for name, messages in fields.items()
    )


def accepts_valid_data(ctx: Any, response: Any, case: Any) -> bool | None:
    """schemathesis's positive_data_acceptance, bar the refusals in UNSTATEABLE."""
    try:
        return positive_data_acceptance(ctx, response, case)
    except RejectedPositiveData:
        if response.status_code == 422 and _unstateable(case.operation.label, response.json()):
            return None
        raise


def error_has_the_contract_shape(ctx: Any, response: Any, case: Any) -> bool | None:
    """Every 4xx is {"error": {"code", "message", "fields"?}}, code and message non-empty strings."""
    if response.status_code < 400:
        return None
    body = response.json()
    assert isinstance(body, dict) and set(body) == {"error"}, body
    error = body["error"]
    assert set(error) <= {"code", "message", "fields"}, error
    assert isinstance(error["code"], str) and error["code"], error
    assert isinstance(error["message"], str) and error["message"], error
    assert isinstance(error.get("fields", {}), dict), error
    return None


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_api_holds_to_its_description(
    case: Any, app: Flask, live_worker: Any, counts: Callable[[], dict[str, int]]
) -> None:
    # Checks that send requests of their own (a missing token, a wrong method) reach the same app.
    case.operation.app = case.operation.schema.app = app
    before = counts()
    response = case.call(app=app)
    if 400 <= response.status_code < 500:
        assert counts() == before, f"{case.operation.label} answered {response.status_code} yet changed rows"
    case.validate_response(
        response,
        excluded_checks=[positive_data_acceptance],
        additional_checks=[accepts_valid_data, error_has_the_contract_shape],
    )
