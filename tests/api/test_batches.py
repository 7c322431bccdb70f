"""Batches over the API: shapes, lists, order, filter, items, logs, unknown ids and the queue controls' codes."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from marshmallow import Schema

from app.extensions import db
from app.processors import registry
from tests.api.conftest import (
    LIST_KEYS,
    assert_batch,
    assert_error,
    assert_iso,
    assert_shape,
    running_and_queued,
)
from tests.conftest import ApiClient, queue_violations

ITEM_KEYS = {
    "profile_id": int,
    "status": str,
    "attempts": int,
    "result": object,
    "error": (str, type(None)),
    "started_at": (str, type(None)),
    "finished_at": (str, type(None)),
}
LOG_KEYS = {"id": int, "at": str, "level": str, "message": str}
TERMINAL = ["done", "failed", "stopped", "cancelled"]


def _sql(app: Flask, statement: str, **params: Any) -> None:
    with app.app_context():
        db.session.execute(db.text(statement), params)
        db.session.commit()
        db.session.remove()


def _finish(app: Flask, batch_id: int, status: str) -> None:
    """Put a batch in a terminal status directly (test setup: no worker runs in these tests)."""
    _sql(
        app,
        "UPDATE batches SET status = :status, queue_rank = NULL, finished_at = now() WHERE id = :id",
        status=status,
        id=batch_id,
    )


def _positions(api: ApiClient) -> dict[int, tuple[str, int | None]]:
    return {b["id"]: (b["status"], b["queue_position"]) for b in api.get("/batches?per_page=500").get_json()["items"]}


# --- create and read -----------------------------------------------------------


def test_create_batch_returns_201_the_batch_and_its_location(api: ApiClient, profile_ids: list[int]) -> None:
    body = {
        "name": "first",
        "profile_ids": profile_ids[::-1],
        "processor": "sleep",
        "parameters": {"seconds": 0.5, "fail_profiles": ["p-1"]},
    }
    response = api.post("/batches", body)
    assert response.status_code == 201
    batch = response.get_json()
    assert_batch(batch)
    assert (batch["name"], batch["processor"], batch["profile_ids"]) == (
        "first",
        "sleep",
        [2, 1],
    )
    assert batch["parameters"] == {"seconds": 0.5, "fail_profiles": ["p-1"]}
    assert batch["progress"] == {"total": 2, "succeeded": 0, "failed": 0, "pending": 2}
    assert (
        batch["status"],
        batch["queue_position"],
        batch["error"],
        batch["finished_at"],
    ) == ("in_progress", 0, None, None)
    assert assert_iso(batch["started_at"]) >= assert_iso(batch["created_at"])
    location = response.headers["Location"]
    assert location.endswith(f"/api/v1/batches/{batch['id']}")
    assert api.client.get(location, headers=api.headers).get_json() == batch


def test_create_batch_without_parameters_uses_the_processor_defaults(api: ApiClient, profile_ids: list[int]) -> None:
    response = api.post("/batches", {"name": "n", "profile_ids": profile_ids, "processor": "noop"})
    assert response.status_code == 201
    assert response.get_json()["parameters"] == {}


class _Patient:
    """A processor that declares its own item time limit."""

    name = "patient"
    description = "Succeeds at once, allowing two hours."
    schema = Schema
    item_timeout = 7200

    def process(self, profile: Any, parameters: dict[str, Any], ctx: Any) -> Any:
        return None


def _stored_item_timeout(app: Flask, batch_id: int) -> float:
    with app.app_context():
        value = db.session.scalar(db.text("SELECT item_timeout FROM batches WHERE id = :id"), {"id": batch_id})
        db.session.remove()
    return value


def test_create_batch_item_timeout_defaults_to_an_hour(api: ApiClient, app: Flask, profile_ids: list[int]) -> None:
    batch = api.batch(profile_ids)
    assert batch["item_timeout"] == 3600.0 == _stored_item_timeout(app, batch["id"])


def test_create_batch_item_timeout_is_the_body_s_else_the_processor_s_else_item_timeout_default(
    api: ApiClient, app: Flask, profile_ids: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(registry._processors, _Patient.name, _Patient())
    monkeypatch.setitem(app.config, "ITEM_TIMEOUT_DEFAULT", 90.0)
    body = {"name": "b", "profile_ids": profile_ids, "parameters": {}}
    decided = {
        "default": api.post("/batches", {**body, "processor": "noop"}),
        "processor's": api.post("/batches", {**body, "processor": _Patient.name}),
        "body's": api.post("/batches", {**body, "processor": _Patient.name, "item_timeout": 2.5}),
    }
    assert {how: response.get_json()["item_timeout"] for how, response in decided.items()} == {
        "default": 90.0,
        "processor's": 7200.0,
        "body's": 2.5,
    }
    for response in decided.values():
        batch = response.get_json()
        assert _stored_item_timeout(app, batch["id"]) == batch["item_timeout"]
        assert api.get(f"/batches/{batch['id']}").get_json()["item_timeout"] == batch["item_timeout"]


def test_create_batch_joins_the_end_of_the_queue_while_one_runs(api: ApiClient, profile_ids: list[int]) -> None:
    batches = running_and_queued(api, profile_ids, 3)
    assert [b["queue_position"] for b in batches] == [0, 1, 2, 3]
    assert [b["started_at"] for b in batches[1:]] == [None, None, None]


def test_get_batch_returns_the_batch(api: ApiClient, profile_ids: list[int]) -> None:
    created = api.batch(profile_ids, name="x")
    response = api.get(f"/batches/{created['id']}")
    assert response.status_code == 200
    assert_batch(response.get_json())
    assert response.get_json() == created


UNKNOWN_ID_ROUTES = [
    ("get", "/batches/{id}", None),
    ("get", "/batches/{id}/items", None),
    ("get", "/batches/{id}/logs", None),
    ("post", "/batches/{id}/stop", None),
    ("post", "/batches/{id}/cancel", None),
    ("post", "/batches/{id}/move", {"position": 1}),
]


@pytest.mark.parametrize("batch_id", [0, 3, 2**31 - 1, 2**31, 2**63, 10**30])
@pytest.mark.parametrize("method, path, body", UNKNOWN_ID_ROUTES)
def test_batch_endpoint_unknown_id_is_404_and_changes_nothing(
    api: ApiClient,
    profile_ids: list[int],
    counts: Any,
    method: str,
    path: str,
    body: Any,
    batch_id: int,
) -> None:
    running_and_queued(api, profile_ids, 1)
    before = counts()
    url = path.format(id=batch_id)
    response = api.get(url) if method == "get" else api.post(url, body)
    assert_error(response, 404)
    assert counts() == before


# --- lists -----------------------------------------------------------------------


def test_list_batches_orders_running_then_queued_by_position_then_the_rest_newest_first(
    api: ApiClient, profile_ids: list[int]
) -> None:
    b1, b2, b3, b4 = (b["id"] for b in running_and_queued(api, profile_ids, 3))
    assert api.post(f"/batches/{b3}/cancel").status_code == 200
    assert api.post(f"/batches/{b1}/stop").status_code == 200
    assert api.post("/queue/start").status_code == 200  # b2 runs, b4 is #1
    b5 = api.batch(profile_ids, name="b5")["id"]  # #2
    assert api.post(f"/batches/{b5}/move", {"position": 1}).status_code == 200
    b6 = api.batch(profile_ids, name="b6")["id"]  # #3
    assert api.post(f"/batches/{b6}/cancel").status_code == 200

    items = api.get("/batches").get_json()["items"]
    assert [b["id"] for b in items] == [b2, b5, b4, b6, b3, b1]
    assert [(b["status"], b["queue_position"]) for b in items] == [
        ("in_progress", 0),
        ("queued", 1),
        ("queued", 2),
        ("cancelled", None),
        ("cancelled", None),
        ("stopped", None),
    ]
    for batch in items:
        assert_batch(batch)


def test_list_batches_orders_the_queue_by_position_not_by_creation(api: ApiClient, profile_ids: list[int]) -> None:
    batches = running_and_queued(api, profile_ids, 4)
    last = batches[-1]["id"]
    assert api.post(f"/batches/{last}/move", {"position": 1}).status_code == 200
    ids = [b["id"] for b in api.get("/batches").get_json()["items"]]
    assert ids == [batches[0]["id"], last] + [b["id"] for b in batches[1:4]]


@pytest.mark.parametrize(
    "status, expected",
    [
        ("in_progress", ["b0"]),
        ("queued", ["b1", "b2"]),
        ("cancelled", ["b3"]),
        ("done", []),
        ("stopping", []),
    ],
)
def test_list_batches_status_filter_returns_only_that_status(
    api: ApiClient, profile_ids: list[int], status: str, expected: list[str]
) -> None:
    batches = running_and_queued(api, profile_ids, 3)
    assert api.post(f"/batches/{batches[3]['id']}/cancel").status_code == 200
    body = api.get(f"/batches?status={status}").get_json()
    assert [b["name"] for b in body["items"]] == expected
    assert body["total"] == len(expected)


def test_list_batches_per_page_defaults_to_50_and_pages_cover_every_batch_once(
    api: ApiClient, profile_ids: list[int]
) -> None:
    for index in range(53):
        api.batch(profile_ids[:1], name=f"b{index}")
    first = api.get("/batches").get_json()
    assert_shape(first, LIST_KEYS)
    assert (len(first["items"]), first["total"], first["page"], first["per_page"]) == (
        50,
        53,
        1,
        50,
    )
    second = api.get("/batches?page=2").get_json()
    assert (len(second["items"]), second["total"], second["page"]) == (3, 53, 2)
    ids = [b["id"] for b in first["items"] + second["items"]]
    assert sorted(ids) == list(range(1, 54))
    assert ids[:3] == [1, 2, 3]  # running, then #1, #2
    small = [api.get(f"/batches?per_page=20&page={page}").get_json()["items"] for page in (1, 2, 3, 4)]
    assert [len(page) for page in small] == [20, 20, 13, 0]
    assert [b["id"] for page in small for b in page] == ids


def test_list_batches_empty(api: ApiClient) -> None:
    assert api.get("/batches").get_json() == {
        "items": [],
        "total": 0,
        "page": 1,
        "per_page": 50,
    }


def test_list_items_returns_one_pending_item_per_profile_in_order(
    api: ApiClient,
) -> None:
    profile_ids = api.profiles(3)
    batch = api.batch([profile_ids[2], profile_ids[0], profile_ids[1]])
    body = api.get(f"/batches/{batch['id']}/items").get_json()
    assert_shape(body, LIST_KEYS)
    assert (body["total"], body["page"], body["per_page"]) == (3, 1, 50)
    for item in body["items"]:
        assert_shape(item, ITEM_KEYS)
    assert [i["profile_id"] for i in body["items"]] == [3, 1, 2]
    assert {
        (
            i["status"],
            i["attempts"],
            i["result"],
            i["error"],
            i["started_at"],
            i["finished_at"],
        )
        for i in body["items"]
    } == {("pending", 0, None, None, None, None)}


def test_list_items_shows_result_error_and_times(api: ApiClient, app: Flask, profile_ids: list[int]) -> None:
    batch = api.batch(profile_ids)
    _sql(
        app,
        "UPDATE batch_items SET status = 'succeeded', attempts = 1, result = '{\"ok\": [1]}',"
        " started_at = now() - interval '1 second', finished_at = now() WHERE position = 0",
    )
    _sql(
        app,
        "UPDATE batch_items SET status = 'failed', attempts = 2, error = 'boom',"
        " started_at = now(), finished_at = now() WHERE position = 1",
    )
    items = api.get(f"/batches/{batch['id']}/items").get_json()["items"]
    for item in items:
        assert_shape(item, ITEM_KEYS)
        assert assert_iso(item["started_at"]) <= assert_iso(item["finished_at"])
    assert [(i["status"], i["attempts"], i["result"], i["error"]) for i in items] == [
        ("succeeded", 1, {"ok": [1]}, None),
        ("failed", 2, None, "boom"),
    ]


def test_list_items_pages(api: ApiClient) -> None:
    profile_ids = api.profiles(5)
    batch = api.batch(profile_ids)
    pages = [api.get(f"/batches/{batch['id']}/items?per_page=2&page={page}").get_json() for page in (1, 2, 3)]
    assert [[i["profile_id"] for i in p["items"]] for p in pages] == [
        [1, 2],
        [3, 4],
        [5],
    ]
    assert all(p["total"] == 5 for p in pages)


def test_list_logs_returns_lines_oldest_first_and_after_skips_seen_ones(api: ApiClient, profile_ids: list[int]) -> None:
    batch = api.batch(profile_ids)
    assert api.post(f"/batches/{batch['id']}/stop").status_code == 200
    body = api.get(f"/batches/{batch['id']}/logs").get_json()
    assert_shape(body, LIST_KEYS)
    lines = body["items"]
    for line in lines:
        assert_shape(line, LOG_KEYS)
        assert_iso(line["at"])
    assert len(lines) >= 3 and body["total"] == len(lines)
    assert [line["id"] for line in lines] == sorted(line["id"] for line in lines)
    assert [assert_iso(line["at"]) for line in lines] == sorted(assert_iso(line["at"]) for line in lines)
    assert lines[0]["message"].startswith("created by token:tests")
    assert "stop requested by token:tests" in [line["message"] for line in lines]

    after = api.get(f"/batches/{batch['id']}/logs?after={lines[0]['id']}").get_json()
    assert after["items"] == lines[1:]
    assert after["total"] == len(lines) - 1
    assert api.get(f"/batches/{batch['id']}/logs?after={lines[-1]['id']}").get_json()["items"] == []
    assert api.get(f"/batches/{batch['id']}/logs?after=0").get_json()["items"] == lines


def test_list_logs_are_the_batch_own(api: ApiClient, profile_ids: list[int]) -> None:
    _, second = running_and_queued(api, profile_ids, 1)
    messages = [line["message"] for line in api.get(f"/batches/{second['id']}/logs").get_json()["items"]]
    assert len(messages) == 1 and messages[0].startswith("created by")


# --- stop, cancel, move: the contract's status codes ----------------------------------


def test_stop_batch_in_progress_is_200_stopping_or_stopped_and_pauses_the_queue(
    api: ApiClient, profile_ids: list[int]
) -> None:
    running, queued = running_and_queued(api, profile_ids, 1)
    response = api.post(f"/batches/{running['id']}/stop")
    assert response.status_code == 200
    batch = response.get_json()
    assert_batch(batch)
    assert batch["id"] == running["id"]
    assert batch["status"] in ("stopping", "stopped")
    queue = api.get("/queue").get_json()
    assert queue["paused"] is True
    assert api.get(f"/batches/{queued['id']}").get_json()["status"] == "queued"


def test_stop_batch_queued_is_409_and_changes_nothing(api: ApiClient, profile_ids: list[int], counts: Any) -> None:
    _, queued = running_and_queued(api, profile_ids, 1)
    before = counts()
    assert_error(api.post(f"/batches/{queued['id']}/stop"), 409)
    assert counts() == before
    assert api.get("/queue").get_json()["paused"] is False


@pytest.mark.parametrize("status", TERMINAL)
def test_stop_batch_finished_is_409(api: ApiClient, app: Flask, profile_ids: list[int], status: str) -> None:
    batch = api.batch(profile_ids)
    _finish(app, batch["id"], status)
    assert_error(api.post(f"/batches/{batch['id']}/stop"), 409)
    assert api.get(f"/batches/{batch['id']}").get_json()["status"] == status


def test_cancel_batch_queued_is_200_cancelled_and_the_queue_closes_up(
    api: ApiClient, app: Flask, profile_ids: list[int]
) -> None:
    b0, b1, b2, b3 = running_and_queued(api, profile_ids, 3)
    response = api.post(f"/batches/{b1['id']}/cancel")
    assert response.status_code == 200
    batch = response.get_json()
    assert_batch(batch)
    assert (batch["id"], batch["status"], batch["queue_position"]) == (
        b1["id"],
        "cancelled",
        None,
    )
    assert batch["finished_at"] is not None
    assert _positions(api) == {
        b0["id"]: ("in_progress", 0),
        b1["id"]: ("cancelled", None),
        b2["id"]: ("queued", 1),
        b3["id"]: ("queued", 2),
    }
    assert api.get("/queue").get_json()["queued_count"] == 2
    with app.app_context():
        assert queue_violations() == []


def test_cancel_batch_running_is_409_and_changes_nothing(api: ApiClient, profile_ids: list[int], counts: Any) -> None:
    running, _ = running_and_queued(api, profile_ids, 1)
    before = counts()
    assert_error(api.post(f"/batches/{running['id']}/cancel"), 409)
    assert counts() == before


@pytest.mark.parametrize("status", TERMINAL)
def test_cancel_batch_finished_is_409(api: ApiClient, app: Flask, profile_ids: list[int], status: str) -> None:
    batch = api.batch(profile_ids)
    _finish(app, batch["id"], status)
    assert_error(api.post(f"/batches/{batch['id']}/cancel"), 409)
    assert api.get(f"/batches/{batch['id']}").get_json()["status"] == status


@pytest.mark.parametrize(
    "index, position, order",
    [
        pytest.param(3, 1, [3, 1, 2], id="last_to_first"),
        pytest.param(1, 3, [2, 3, 1], id="first_to_last"),
        pytest.param(1, 2, [2, 1, 3], id="first_to_middle"),
        pytest.param(2, 2, [1, 2, 3], id="to_where_it_is"),
        pytest.param(1, 99, [2, 3, 1], id="past_the_end_means_last"),
        pytest.param(1, 2**70, [2, 3, 1], id="far_past_the_end_means_last"),
    ],
)
def test_move_batch_queued_is_200_at_that_position(
    api: ApiClient,
    app: Flask,
    profile_ids: list[int],
    index: int,
    position: int,
    order: list[int],
) -> None:
    batches = running_and_queued(api, profile_ids, 3)
    moved = batches[index]
    response = api.post(f"/batches/{moved['id']}/move", {"position": position})
    assert response.status_code == 200
    body = response.get_json()
    assert_batch(body)
    assert (body["id"], body["status"]) == (moved["id"], "queued")
    assert body["queue_position"] == order.index(index) + 1
    queued = [b for b in api.get("/batches?status=queued").get_json()["items"]]
    assert [b["id"] for b in queued] == [batches[i]["id"] for i in order]
    assert [b["queue_position"] for b in queued] == [1, 2, 3]
    with app.app_context():
        assert queue_violations() == []


def test_move_batch_running_is_409_and_changes_nothing(api: ApiClient, profile_ids: list[int], counts: Any) -> None:
    running, _ = running_and_queued(api, profile_ids, 1)
    before = counts()
    assert_error(api.post(f"/batches/{running['id']}/move", {"position": 1}), 409)
    assert counts() == before


@pytest.mark.parametrize("status", TERMINAL)
def test_move_batch_finished_is_409(api: ApiClient, app: Flask, profile_ids: list[int], status: str) -> None:
    batch = api.batch(profile_ids)
    _finish(app, batch["id"], status)
    assert_error(api.post(f"/batches/{batch['id']}/move", {"position": 1}), 409)
    assert api.get(f"/batches/{batch['id']}").get_json()["queue_position"] is None
