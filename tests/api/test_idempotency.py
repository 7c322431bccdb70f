"""Idempotency-Key on POST /batches: a retry returns the first batch, another body is a conflict."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask

from tests.api.conftest import assert_batch, assert_error
from tests.conftest import ApiClient, run_in_threads


def _body(ids: list[int], **changes: Any) -> dict[str, Any]:
    return {
        "name": "b",
        "profile_ids": ids,
        "processor": "sleep",
        "parameters": {"seconds": 1},
    } | changes


def _post(api: ApiClient, body: Any, key: str | None) -> Any:
    return api.post("/batches", body, headers={"Idempotency-Key": key} if key is not None else {})


def test_idempotency_repeat_with_same_key_and_body_returns_the_same_batch_with_200(
    api: ApiClient, profile_ids: list[int], counts: Any
) -> None:
    first = _post(api, _body(profile_ids), "key-1")
    assert first.status_code == 201
    before = counts()
    repeat = _post(api, _body(profile_ids), "key-1")
    assert repeat.status_code == 200
    assert_batch(repeat.get_json())
    assert repeat.get_json() == first.get_json()
    assert repeat.headers["Location"] == first.headers["Location"]
    assert counts() == before
    assert (before["batches"], before["batch_items"]) == (1, 2)


def test_idempotency_same_body_with_keys_in_another_order_is_a_repeat(api: ApiClient, profile_ids: list[int]) -> None:
    first = _post(api, _body(profile_ids), "key-1")
    reordered = dict(reversed(list(_body(profile_ids).items())))
    repeat = _post(api, reordered, "key-1")
    assert (repeat.status_code, repeat.get_json()["id"]) == (
        200,
        first.get_json()["id"],
    )


def test_idempotency_repeat_returns_the_batch_as_it_is_now(api: ApiClient, profile_ids: list[int]) -> None:
    first = _post(api, _body(profile_ids), "key-1").get_json()
    assert api.post(f"/batches/{first['id']}/stop").status_code == 200
    repeat = _post(api, _body(profile_ids), "key-1")
    assert repeat.status_code == 200
    assert (repeat.get_json()["id"], repeat.get_json()["status"]) == (
        first["id"],
        "stopped",
    )


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"name": "other"}, id="other_name"),
        pytest.param({"profile_ids": [2, 1]}, id="profiles_in_another_order"),
        pytest.param({"parameters": {"seconds": 2}}, id="other_parameters"),
        pytest.param({"processor": "noop", "parameters": {}}, id="other_processor"),
    ],
)
def test_idempotency_same_key_with_another_body_is_409_and_stores_nothing(
    api: ApiClient, profile_ids: list[int], counts: Any, changes: dict[str, Any]
) -> None:
    first = _post(api, _body(profile_ids), "key-1").get_json()
    before = counts()
    assert_error(_post(api, _body(profile_ids, **changes), "key-1"), 409)
    assert counts() == before
    assert api.get(f"/batches/{first['id']}").get_json() == first


def test_idempotency_without_a_key_every_request_makes_a_batch(api: ApiClient, profile_ids: list[int]) -> None:
    first = _post(api, _body(profile_ids), None)
    second = _post(api, _body(profile_ids), None)
    assert (first.status_code, second.status_code) == (201, 201)
    assert first.get_json()["id"] != second.get_json()["id"]
    assert api.get("/batches").get_json()["total"] == 2


def test_idempotency_different_keys_make_different_batches(api: ApiClient, profile_ids: list[int]) -> None:
    first = _post(api, _body(profile_ids), "key-1")
    second = _post(api, _body(profile_ids), "key-2")
    assert (first.status_code, second.status_code) == (201, 201)
    assert first.get_json()["id"] != second.get_json()["id"]


def test_idempotency_a_refused_request_does_not_use_up_the_key(api: ApiClient, profile_ids: list[int]) -> None:
    assert_error(_post(api, _body([1, 999]), "key-1"), (400, 422), "profile_ids")
    assert_error(
        _post(api, _body(profile_ids, processor="nope"), "key-1"),
        (400, 422),
        "processor",
    )
    assert _post(api, _body(profile_ids), "key-1").status_code == 201


def test_idempotency_key_of_200_characters_is_accepted(api: ApiClient, profile_ids: list[int]) -> None:
    key = "k" * 200
    assert _post(api, _body(profile_ids), key).status_code == 201
    assert _post(api, _body(profile_ids), key).status_code == 200


def test_idempotency_key_over_200_characters_is_refused_and_stores_nothing(
    api: ApiClient, profile_ids: list[int], counts: Any
) -> None:
    before = counts()
    assert_error(_post(api, _body(profile_ids), "k" * 201), (400, 422), "Idempotency-Key")
    assert counts() == before


@pytest.mark.parametrize("count", [2, 10])
def test_idempotency_concurrent_requests_with_one_key_make_exactly_one_batch(
    api: ApiClient,
    app: Flask,
    profile_ids: list[int],
    counts: Any,
    sent: list[Any],
    count: int,
) -> None:
    clients = [ApiClient(app.test_client(), api.headers["Authorization"].split(" ", 1)[1]) for _ in range(count)]

    def create(index: int) -> tuple[int, int]:
        response = _post(clients[index], _body(profile_ids), "same-key")
        return response.status_code, response.get_json()["id"]

    results = run_in_threads(count, create)
    assert sorted(status for status, _ in results) == [200] * (count - 1) + [201]
    assert len({batch_id for _, batch_id in results}) == 1
    after = counts()
    assert (after["batches"], after["batch_items"]) == (1, 2)
    assert len(sent) == 1


@pytest.mark.parametrize("count", [2, 10])
def test_idempotency_concurrent_requests_with_one_key_and_different_bodies_make_one_batch(
    api: ApiClient, app: Flask, profile_ids: list[int], counts: Any, count: int
) -> None:
    clients = [ApiClient(app.test_client(), api.headers["Authorization"].split(" ", 1)[1]) for _ in range(count)]

    def create(index: int) -> int:
        return _post(clients[index], _body(profile_ids, name=f"b{index}"), "same-key").status_code

    statuses = run_in_threads(count, create)
    assert sorted(statuses) == [201] + [409] * (count - 1)
    assert counts()["batches"] == 1
