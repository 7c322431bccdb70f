"""GET /queue and POST /queue/start: the shape, start_enabled, and Start's status codes."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from flask import Flask

from app.extensions import db
from app.services import leases
from tests.api.conftest import (
    assert_batch,
    assert_error,
    assert_iso,
    assert_shape,
    running_and_queued,
)
from tests.conftest import ApiClient, queue_violations

QUEUE_KEYS = {
    "paused": bool,
    "paused_reason": (str, type(None)),
    "draining": bool,
    "running": (dict, type(None)),
    "queued_count": int,
    "start_enabled": bool,
}
# Beyond the contract: who paused the queue and when (tests/tasks read paused_by). Listed
# here so that any other key appearing, or one of these vanishing, fails the shape check.
QUEUE_EXTRA_KEYS = {"paused_by": (str, type(None)), "paused_at": (str, type(None))}
IDLE = {
    "paused": False,
    "paused_reason": None,
    "draining": False,
    "running": None,
    "queued_count": 0,
    "start_enabled": True,
}


def _queue(api: ApiClient) -> dict[str, Any]:
    response = api.get("/queue")
    assert response.status_code == 200
    body = response.get_json()
    assert_shape(body, QUEUE_KEYS | QUEUE_EXTRA_KEYS)
    if body["running"] is not None:
        assert_batch(body["running"])
    if body["paused_at"] is not None:
        assert_iso(body["paused_at"])
    return {key: body[key] for key in QUEUE_KEYS}


@contextmanager
def _lease_held(app: Flask, batch_id: int) -> Iterator[None]:
    """Hold the batch's run lease as a live run would, so a stop has something to wait for."""
    with app.app_context():
        connection = db.engine.connect()
        try:
            assert leases.try_acquire(connection, batch_id)
            connection.commit()
            yield
        finally:
            leases.release(connection, batch_id)
            connection.close()


def test_queue_idle_and_empty_has_start_enabled(api: ApiClient) -> None:
    assert _queue(api) == IDLE


def test_queue_shows_the_running_batch_and_the_queued_count(api: ApiClient, profile_ids: list[int]) -> None:
    batches = running_and_queued(api, profile_ids, 2)
    body = _queue(api)
    assert body["running"] == api.get(f"/batches/{batches[0]['id']}").get_json()
    assert (body["paused"], body["queued_count"], body["start_enabled"]) == (
        False,
        2,
        False,
    )


def test_queue_paused_by_a_stop_has_start_enabled(api: ApiClient, profile_ids: list[int]) -> None:
    running, _ = running_and_queued(api, profile_ids, 1)
    assert api.post(f"/batches/{running['id']}/stop").get_json()["status"] == "stopped"
    assert _queue(api) == {
        "paused": True,
        "paused_reason": "stopped",
        "draining": False,
        "running": None,
        "queued_count": 1,
        "start_enabled": True,
    }
    body = api.get("/queue").get_json()
    assert body["paused_by"] == "token:tests"
    assert_iso(body["paused_at"])


def test_queue_while_a_batch_is_stopping_counts_it_as_running(
    api: ApiClient, app: Flask, profile_ids: list[int]
) -> None:
    running, _ = running_and_queued(api, profile_ids, 1)
    with _lease_held(app, running["id"]):
        stopped = api.post(f"/batches/{running['id']}/stop")
        assert (stopped.status_code, stopped.get_json()["status"]) == (200, "stopping")
        body = _queue(api)
        assert body["running"]["id"] == running["id"] and body["running"]["status"] == "stopping"
        assert (body["paused"], body["start_enabled"]) == (True, False)
        assert_error(api.post("/queue/start"), 409)
        assert_error(api.post(f"/batches/{running['id']}/stop"), 409)


def test_start_queue_while_a_batch_runs_is_409_and_changes_nothing(
    api: ApiClient, profile_ids: list[int], counts: Any
) -> None:
    running_and_queued(api, profile_ids, 1)
    before, queue = counts(), _queue(api)
    assert_error(api.post("/queue/start"), 409)
    assert counts() == before
    assert _queue(api) == queue


def test_start_queue_paused_unpauses_and_promotes_the_head(
    api: ApiClient, app: Flask, profile_ids: list[int], sent: list[Any]
) -> None:
    b0, b1, b2 = running_and_queued(api, profile_ids, 2)
    api.post(f"/batches/{b0['id']}/stop")
    response = api.post("/queue/start")
    assert response.status_code == 200
    assert_shape(response.get_json(), QUEUE_KEYS | QUEUE_EXTRA_KEYS)
    body = _queue(api)
    assert body["running"]["id"] == b1["id"]
    assert (body["running"]["status"], body["running"]["queue_position"]) == (
        "in_progress",
        0,
    )
    assert (body["paused"], body["queued_count"], body["start_enabled"]) == (
        False,
        1,
        False,
    )
    assert api.get(f"/batches/{b2['id']}").get_json()["queue_position"] == 1
    assert [batch_id for batch_id, _ in sent] == [b0["id"], b1["id"]]
    with app.app_context():
        assert queue_violations() == []


@pytest.mark.parametrize("paused", [False, True])
def test_start_queue_idle_and_empty_is_200_and_unpaused(api: ApiClient, app: Flask, paused: bool) -> None:
    with app.app_context():
        db.session.execute(db.text("UPDATE queue_state SET paused = :p"), {"p": paused})
        db.session.commit()
        db.session.remove()
    response = api.post("/queue/start")
    assert response.status_code == 200
    assert {key: response.get_json()[key] for key in QUEUE_KEYS} == IDLE
    assert _queue(api) == IDLE


def test_create_batch_while_paused_is_queued_not_started(api: ApiClient, profile_ids: list[int]) -> None:
    running, _ = running_and_queued(api, profile_ids, 1)
    api.post(f"/batches/{running['id']}/stop")
    late = api.batch(profile_ids, name="late")
    assert (late["status"], late["queue_position"]) == ("queued", 2)
    assert _queue(api)["running"] is None
