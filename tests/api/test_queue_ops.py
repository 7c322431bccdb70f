"""Resume, retry, drain and the failure policy over the API: status codes, bodies, and refusals that change nothing."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask

from app.extensions import db
from tests.api.conftest import assert_batch, assert_error, running_and_queued
from tests.conftest import ApiClient


def _stopped(api: ApiClient, profile_ids: list[int]) -> dict[str, Any]:
    """A batch stopped before its run began (no worker here): every item pending, the queue paused."""
    batch = api.batch(profile_ids, name="to resume")
    assert batch["status"] == "in_progress"
    stopped = api.post(f"/batches/{batch['id']}/stop").get_json()
    assert stopped["status"] == "stopped"
    return stopped


def _fail(app: Flask, batch_id: int, failed_positions: tuple[int, ...]) -> None:
    """End a batch as failed, with the items at `failed_positions` failed and the rest succeeded."""
    with app.app_context():
        db.session.execute(
            db.text(
                "UPDATE batch_items SET status = CASE WHEN position = ANY(:f) THEN 'failed' ELSE 'succeeded' END"
                " WHERE batch_id = :id"
            ),
            {"id": batch_id, "f": list(failed_positions)},
        )
        db.session.execute(
            db.text(
                "UPDATE batches SET status = 'failed', finished_at = now(), failed_items = :n,"
                " succeeded_items = total_items - :n WHERE id = :id"
            ),
            {"id": batch_id, "n": len(failed_positions)},
        )
        db.session.commit()
        db.session.remove()


def test_resume_without_a_body_queues_the_stopped_batch_at_the_end(
    api: ApiClient, profile_ids: list[int], live_worker: Any
) -> None:
    stopped = _stopped(api, profile_ids)
    behind = api.batch(profile_ids, name="behind")
    response = api.client.post(f"/api/v1/batches/{stopped['id']}/resume", headers=api.headers)
    assert response.status_code == 200
    body = response.get_json()
    assert_batch(body)
    assert (body["status"], body["queue_position"]) == ("queued", 2)
    assert (body["started_at"], body["finished_at"], body["error"]) == (None, None, None)
    assert body["waiting_code"] == "paused"
    assert api.batch_of(behind["id"])["queue_position"] == 1
    assert api.log_of(stopped["id"])[-1].startswith("resumed by token:tests at #2")


def test_resume_at_a_position_puts_it_there(api: ApiClient, profile_ids: list[int]) -> None:
    stopped = _stopped(api, profile_ids)
    others = [api.batch(profile_ids, name=f"q{n}")["id"] for n in range(3)]
    body = api.post(f"/batches/{stopped['id']}/resume", {"position": 2}).get_json()
    assert body["queue_position"] == 2
    assert [api.batch_of(batch_id)["queue_position"] for batch_id in others] == [1, 3, 4]


@pytest.mark.parametrize(
    ("payload", "field"),
    [({"position": 0}, "position"), ({"position": "2"}, "position"), ({"position": 1.5}, "position"), ({"x": 1}, "x")],
)
def test_resume_with_a_bad_position_is_422_naming_it_and_changes_nothing(
    api: ApiClient, profile_ids: list[int], payload: dict[str, Any], field: str
) -> None:
    stopped = _stopped(api, profile_ids)
    assert_error(api.post(f"/batches/{stopped['id']}/resume", payload), 422, field)
    assert api.batch_of(stopped["id"])["status"] == "stopped"


def test_resume_of_a_batch_that_is_not_stopped_is_409_and_of_an_unknown_one_404(
    api: ApiClient, profile_ids: list[int]
) -> None:
    running, queued = running_and_queued(api, profile_ids, 1)
    for batch in (running, queued):
        assert_error(api.post(f"/batches/{batch['id']}/resume"), 409)
        assert api.batch_of(batch["id"])["status"] == batch["status"]
        assert len(api.log_of(batch["id"])) == (2 if batch is running else 1)
    assert_error(api.post("/batches/999/resume"), 404)


def test_retry_is_201_with_a_location_and_the_failed_items_only(
    api: ApiClient, app: Flask, profile_ids: list[int]
) -> None:
    many = profile_ids + api.profiles(2, prefix="more")
    original = api.batch(many, "sleep", name="flaky", seconds=0)
    _fail(app, original["id"], (1, 2))
    response = api.post(f"/batches/{original['id']}/retry")
    assert response.status_code == 201
    body = response.get_json()
    assert_batch(body)
    assert response.headers["Location"] == f"/api/v1/batches/{body['id']}"
    assert (body["retry_of"], body["profile_ids"], body["name"]) == (original["id"], many[1:3], "flaky (retry)")
    assert (body["processor"], body["parameters"]) == ("sleep", {"seconds": 0, "fail_profiles": []})
    assert api.batch_of(original["id"])["status"] == "failed" and api.batch_of(original["id"])["retry_of"] is None
    assert api.get("/batches").get_json()["total"] == 2


def test_retry_with_no_failed_items_or_not_failed_is_409_and_creates_nothing(
    api: ApiClient, app: Flask, profile_ids: list[int]
) -> None:
    running, queued = running_and_queued(api, profile_ids, 1)
    _fail(app, running["id"], ())
    for batch in (running, queued):
        assert_error(api.post(f"/batches/{batch['id']}/retry"), 409)
    assert_error(api.post("/batches/999/retry"), 404)
    assert api.get("/batches").get_json()["total"] == 2


def test_drain_with_nothing_running_pauses_at_once(api: ApiClient) -> None:
    body = api.post("/queue/drain").get_json()
    assert (body["paused"], body["paused_by"], body["paused_reason"], body["draining"]) == (
        True,
        "token:tests",
        "drained",
        False,
    )
    assert body["start_enabled"] is True


def test_drain_while_a_batch_runs_sets_draining_and_start_cancels_it(
    api: ApiClient, profile_ids: list[int], live_worker: Any
) -> None:
    running, queued = running_and_queued(api, profile_ids, 1)
    body = api.post("/queue/drain").get_json()
    assert (body["paused"], body["draining"], body["running"]["id"], body["start_enabled"]) == (
        False,
        True,
        running["id"],
        False,
    )
    batch = api.batch_of(queued["id"])
    assert batch["waiting_code"] == "draining"
    assert f"pauses after batch {running['id']}" in batch["waiting_reason"]
    body = api.post("/queue/start").get_json()
    assert (body["paused"], body["draining"]) == (False, False)
    assert_error(api.post("/queue/start"), 409)  # no drain left to cancel
    assert api.batch_of(queued["id"])["waiting_code"] == "behind"


def test_the_stop_reason_shows_in_get_queue(api: ApiClient, profile_ids: list[int]) -> None:
    _stopped(api, profile_ids)
    assert api.get("/queue").get_json()["paused_reason"] == "stopped"
    api.post("/queue/start")
    assert api.get("/queue").get_json()["paused_reason"] is None


def test_the_failure_policy_reads_from_the_settings_and_changes_at_run_time(
    api: ApiClient, admin_api: ApiClient
) -> None:
    assert api.get("/queue/policy").get_json() == {"on_failure": "continue", "pause_after_failures": 0}
    response = admin_api.put("/queue/policy", {"on_failure": "pause", "pause_after_failures": 3})
    assert response.status_code == 200
    assert response.get_json() == {"on_failure": "pause", "pause_after_failures": 3}
    assert api.get("/queue/policy").get_json() == {"on_failure": "pause", "pause_after_failures": 3}


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"on_failure": "stop", "pause_after_failures": 0}, "on_failure"),
        ({"on_failure": "pause", "pause_after_failures": -1}, "pause_after_failures"),
        ({"on_failure": "pause", "pause_after_failures": "2"}, "pause_after_failures"),
        ({"pause_after_failures": 2}, "on_failure"),
    ],
)
def test_a_bad_failure_policy_is_422_naming_the_field_and_changes_nothing(
    api: ApiClient, admin_api: ApiClient, payload: dict[str, Any], field: str
) -> None:
    assert_error(admin_api.put("/queue/policy", payload), 422, field)
    assert api.get("/queue/policy").get_json() == {"on_failure": "continue", "pause_after_failures": 0}


def test_a_policy_pause_says_so_in_get_queue(
    api: ApiClient, admin_api: ApiClient, app: Flask, profile_ids: list[int]
) -> None:
    admin_api.put("/queue/policy", {"on_failure": "continue", "pause_after_failures": 1})
    running, queued = running_and_queued(api, profile_ids, 1)
    _fail(app, running["id"], (0,))
    with app.app_context():
        from app.services import queue_manager

        assert queue_manager.promote_next_batch() is None
    body = api.get("/queue").get_json()
    assert (body["paused"], body["paused_reason"]) == (True, "1 failed batch in a row (failure policy)")
    assert api.batch_of(queued["id"])["status"] == "queued"
