"""URLs the API has no route for still answer in the contract's JSON error shape."""

from __future__ import annotations

import pytest

from tests.conftest import ApiClient


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("get", "/batches/abc", 404, "not_found"),
        ("get", "/no-such-thing", 404, "not_found"),
        ("get", "/batches/1/stop", 405, "method_not_allowed"),
        ("put", "/queue", 405, "method_not_allowed"),
    ],
)
def test_routing_errors_are_json(api: ApiClient, method: str, path: str, status: int, code: str) -> None:
    response = getattr(api.client, method)(f"/api/v1{path}", headers=api.headers)
    assert response.status_code == status
    assert response.get_json()["error"]["code"] == code


def test_sleep_seconds_must_be_a_json_number(api: ApiClient, profile_ids: list[int]) -> None:
    body = {"name": "b", "profile_ids": profile_ids, "processor": "sleep", "parameters": {"seconds": "5"}}
    response = api.post("/batches", body)
    assert response.status_code == 422
    assert "seconds" in response.get_json()["error"]["fields"]["parameters"]
