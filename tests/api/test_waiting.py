"""waiting_code, waiting_reason and estimated_start_at: why a batch waits, and when it should start."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import Connection

from app.extensions import db
from app.models._types import utcnow
from app.services import leases
from app.services.health import BrokerProbe
from tests.conftest import ApiClient


def _batch(api: ApiClient, batch_id: int) -> dict[str, Any]:
    return api.get(f"/batches/{batch_id}").get_json()


def _listed(api: ApiClient) -> dict[int, dict[str, Any]]:
    return {b["id"]: b for b in api.get("/batches?per_page=500").get_json()["items"]}


def _reason(body: dict[str, Any]) -> tuple[str | None, str | None]:
    return body["waiting_code"], body["waiting_reason"]


def _sql(app: Flask, statement: str, **params: Any) -> None:
    with app.app_context():
        db.session.execute(db.text(statement), params)
        db.session.commit()


@pytest.fixture
def lease(app: Flask) -> Iterator[Any]:
    """Hold a batch's run lease on a connection of our own, as a live run does."""
    held: list[Connection] = []

    def take(batch_id: int) -> Connection:
        with app.app_context():
            connection = db.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        assert leases.try_acquire(connection, batch_id)
        held.append(connection)
        return connection

    yield take
    for connection in held:
        connection.invalidate()  # ends its session, and the lease with it (a pooled close would keep it)
        connection.close()


def test_without_a_worker_the_queued_and_the_unclaimed_running_batch_say_no_worker(
    api: ApiClient, without_workers: None
) -> None:
    ids = api.profiles(1)
    running, queued = api.batch(ids), api.batch(ids)
    assert _reason(_batch(api, queued["id"])) == ("no_worker", "no worker is running")
    assert _reason(_batch(api, running["id"])) == ("no_worker", "no worker is running")
    assert _batch(api, queued["id"])["estimated_start_at"] is None


def test_queued_batches_behind_a_running_one_say_what_they_wait_for(
    api: ApiClient, live_worker: Any, lease: Any
) -> None:
    ids = api.profiles(1)
    running, first, second = api.batch(ids), api.batch(ids), api.batch(ids)
    lease(running["id"])  # its run is under way
    listed = _listed(api)
    assert _reason(listed[running["id"]]) == (None, None)
    assert _reason(listed[first["id"]]) == ("behind", f"waiting for batch {running['id']} (#1 starts next)")
    assert _reason(listed[second["id"]]) == ("behind", f"waiting for batch {running['id']} (1 queued ahead)")
    assert _reason(_batch(api, second["id"])) == _reason(listed[second["id"]])  # one batch reads the same


def test_a_promoted_batch_whose_run_has_not_begun_is_starting(api: ApiClient, live_worker: Any) -> None:
    running = api.batch(api.profiles(1))
    assert _reason(_batch(api, running["id"])) == ("starting", "starting")


def test_a_paused_queue_says_who_paused_it_and_when(api: ApiClient, live_worker: Any) -> None:
    ids = api.profiles(1)
    running, queued = api.batch(ids), api.batch(ids)
    assert api.post(f"/batches/{running['id']}/stop").get_json()["status"] == "stopped"  # no run held it
    paused_at = datetime.fromisoformat(api.get("/queue").get_json()["paused_at"])
    code, reason = _reason(_batch(api, queued["id"]))
    assert (code, reason) == ("paused", f"queue paused by token:tests at {paused_at:%H:%M} UTC")
    assert _batch(api, running["id"])["waiting_code"] is None  # finished batches wait for nothing


def test_a_lost_run_dispatched_again_says_when_it_was_lost_and_which_attempt_comes(
    api: ApiClient, app: Flask, live_worker: Any
) -> None:
    running = api.batch(api.profiles(1))
    lost_at = utcnow() - timedelta(minutes=3)
    _sql(app, "UPDATE batches SET run_attempts = 1, lost_at = :at WHERE id = :id", at=lost_at, id=running["id"])
    expected = f"run lost at {lost_at:%H:%M} UTC; retrying (attempt 2 of 3)"
    assert _reason(_batch(api, running["id"])) == ("recovering", expected)


def test_a_run_that_holds_its_lease_is_not_held_back(api: ApiClient, live_worker: Any, lease: Any) -> None:
    running = api.batch(api.profiles(1))
    lease(running["id"])
    assert _reason(_batch(api, running["id"])) == (None, None)


def test_an_unreachable_broker_holds_every_waiting_batch_back(
    api: ApiClient, app: Flask, live_worker: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = api.profiles(1)
    api.batch(ids)
    queued = api.batch(ids)
    monkeypatch.setattr(BrokerProbe, "_probe", lambda self: False)
    monkeypatch.delitem(app.extensions, "broker_probe", raising=False)
    assert _reason(_batch(api, queued["id"])) == ("broker", "the broker is unreachable")


def test_a_head_left_waiting_with_nothing_running_is_starting_and_start_promotes_it(
    api: ApiClient, app: Flask, live_worker: Any
) -> None:
    _sql(app, "UPDATE queue_state SET paused = true")
    head = api.batch(api.profiles(1))
    _sql(app, "UPDATE queue_state SET paused = false")  # as after a lost promotion
    assert _reason(_batch(api, head["id"])) == ("starting", "starting")
    queue = api.get("/queue").get_json()
    assert (queue["running"], queue["paused"], queue["start_enabled"]) == (None, False, True)
    assert api.post("/queue/start").get_json()["running"]["id"] == head["id"]


def _history(app: Flask, processor: str, seconds_per_item: float, items: int = 10) -> None:
    """Two finished batches of a processor whose items took `seconds_per_item` each."""
    for ago in (100, 50):
        finished = utcnow() - timedelta(seconds=ago)
        _sql(
            app,
            "INSERT INTO batches (name, status, processor, parameters, profile_ids, total_items, succeeded_items,"
            " failed_items, created_at, started_at, finished_at, run_attempts, item_timeout)"
            " VALUES ('history', 'done', :processor, '{}', '{}', :n, :n, 0, :started, :started, :finished, 1, 60)",
            processor=processor,
            n=items,
            started=finished - timedelta(seconds=seconds_per_item * items),
            finished=finished,
        )


class _Answer:
    """An API answer with the moments just before and after it: its own "now" lies in between."""

    def __init__(self, read: Any) -> None:
        self.before = utcnow()
        self.body = read()
        self.after = utcnow()

    def starts_in(self, body: dict[str, Any], seconds: float) -> bool:
        """Whether the estimate is `seconds` from the answer's now (within a second of rounding either way)."""
        at = datetime.fromisoformat(body["estimated_start_at"])
        return self.before + timedelta(seconds=seconds - 1) <= at <= self.after + timedelta(seconds=seconds + 1)


def test_estimated_start_adds_up_the_running_batch_and_the_queue_ahead(
    api: ApiClient, app: Flask, live_worker: Any, lease: Any
) -> None:
    _history(app, "noop", 2.0)
    _history(app, "sleep", 10.0)
    ids = api.profiles(5)
    running = api.batch(ids[:4])  # noop: 4 items left, 8 s
    lease(running["id"])
    first = api.batch(ids[:3], "sleep", seconds=0)  # starts after 8 s; 3 sleep items, 30 s
    second = api.batch(ids[:2])  # starts after 38 s
    # Bracketed by the moments around each answer rather than compared with a later clock: a
    # loaded machine may take its time between the answer and the check.
    listed = _Answer(lambda: _listed(api))
    assert listed.starts_in(listed.body[first["id"]], 8), listed.body[first["id"]]["estimated_start_at"]
    assert listed.starts_in(listed.body[second["id"]], 38), listed.body[second["id"]]["estimated_start_at"]
    alone = _Answer(lambda: _batch(api, second["id"]))
    assert alone.starts_in(alone.body, 38), alone.body["estimated_start_at"]
    assert listed.body[running["id"]]["estimated_start_at"] is None  # it has started


def test_no_estimate_without_history_of_a_processor_ahead(api: ApiClient, app: Flask, live_worker: Any) -> None:
    _history(app, "noop", 1.0)
    ids = api.profiles(2)
    api.batch(ids, "sleep", seconds=0)  # running: no sleep history
    queued = api.batch(ids)
    assert _batch(api, queued["id"])["estimated_start_at"] is None


def test_no_estimate_while_the_queue_is_paused(api: ApiClient, app: Flask, live_worker: Any) -> None:
    _history(app, "noop", 1.0)
    ids = api.profiles(1)
    running, queued = api.batch(ids), api.batch(ids)
    api.post(f"/batches/{running['id']}/stop")
    assert _batch(api, queued["id"])["estimated_start_at"] is None
