"""The table's new moves racing a promotion, with the session's real worker: the queue keeps its rules.

Each round releases a page's "to the top" (or "to position 3") and a promotion (Start, or the
promotion task after a lost signal) at the same moment. Whichever the queue lock lets in first, the
outcome is one of two consistent queues, and the batch log tells which.
"""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from app.extensions import db
from tests.conftest import PASSWORD, ApiClient, assert_queue_consistent, run_in_threads
from tests.services.test_queue_races import _client, _pause, _stop_running

pytestmark = pytest.mark.usefixtures("settled")


def _page_client(app: Flask, user: str) -> FlaskClient:
    """A signed-in page client of its own, for one thread."""
    client = app.test_client()
    assert client.post("/login", data={"username": user, "password": PASSWORD}).status_code == 302
    return client


def _moves(api: ApiClient, batch_id: int) -> list[str]:
    return [line for line in api.log_of(batch_id) if line.startswith("moved")]


def test_move_top_and_to_position_racing_promotion_keep_the_queue(
    api: ApiClient, app: Flask, user: str, celery_worker: Any
) -> None:
    profile_ids = api.profiles(1)
    _pause(app)
    for n in range(4):
        api.batch(profile_ids, "sleep", name=f"seed {n}", seconds=5)
    page = _page_client(app, user)
    starter = _client(app, api)
    celery = app.extensions["celery"]
    outcomes: set[str] = set()
    for round_ in range(8):
        head, second, third = api.queued_order()[:3]
        by_task, to_top = round_ % 2 == 1, round_ % 4 < 2
        moved = second if to_top else head
        moves_before = len(_moves(api, moved))

        def act(
            index: int, head: int = head, second: int = second, by_task: bool = by_task, to_top: bool = to_top
        ) -> Any:
            if index == 0:  # the promotion
                if by_task:
                    return celery.send_task("queue.promote_next", queue="control", ignore_result=False).get(timeout=10)
                return starter.post("/queue/start").status_code
            if to_top:
                return page.post(f"/batches/{second}/move-top").status_code
            return page.post(f"/batches/{head}/move", data={"position": "3"}).status_code

        if by_task:  # un-paused, slot free, nobody promoted yet
            with app.app_context():
                db.session.execute(db.text("UPDATE queue_state SET paused = false, paused_by = NULL"))
                db.session.commit()
        promoted, answered = run_in_threads(2, act)
        assert answered == 302  # a page control answers with the table, whatever the queue said
        assert_queue_consistent(app)
        running = api.get("/queue").get_json()["running"]
        assert running is not None and api.get("/batches?status=in_progress").get_json()["total"] == 1
        if by_task:
            assert promoted == running["id"]
        order = api.queued_order()
        logged = _moves(api, moved)[moves_before:]
        if to_top and running["id"] == second:  # the move came first, and the promotion took the new head
            assert logged == ["moved from #2 to #1 by alice"] and order[0] == head
            outcomes.add("moved, then promoted")
        elif to_top:  # the promotion came first: the batch was already #1, nothing to move
            assert running["id"] == head and logged == [] and order[0] == second
            outcomes.add("promoted, then nothing to move")
        elif running["id"] == second:  # the head went to #3 first; #2 became the head and started
            assert logged == ["moved from #1 to #3 by alice"] and order[:2] == [third, head]
            outcomes.add("moved away, then promoted")
        else:  # the head started first: a running batch can't be moved
            assert running["id"] == head and logged == [] and order[:2] == [second, third]
            outcomes.add("promoted, then refused")
        _stop_running(api)
        assert_queue_consistent(app)
        api.batch(profile_ids, "sleep", name=f"refill {round_}", seconds=5)
    assert outcomes, "no round ran"
