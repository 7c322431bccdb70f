"""Queue control through the API with a real worker: stop, Start, move, cancel and their 409s."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from flask import Flask
from marshmallow import Schema

from app.processors import registry
from app.processors.base import ProfileData, RunContext
from tests.conftest import ApiClient, Gate, assert_queue_consistent, sent_tasks, wait_for

pytestmark = pytest.mark.usefixtures("settled")


def _queue(api: ApiClient) -> dict[str, Any]:
    return api.get("/queue").get_json()


def _positions(api: ApiClient, ids: list[int]) -> dict[int, int | None]:
    return {batch_id: api.batch_of(batch_id)["queue_position"] for batch_id in ids}


def _item_running(api: ApiClient, batch_id: int, index: int) -> bool:
    return api.items_of(batch_id)[index]["status"] == "running"


# What a stop gets on a loaded machine: the promise is a second (the run's watcher looks every
# 0.2 s, the built-in processors let go at once), but a busy 2-core machine can hold a thread back
# for longer. The items stopped here would run 30 s or more, so a stop within this bound can only
# be the stop interrupting them, never the item ending by itself.
STOP_BOUND_SECONDS = 5.0


class _FirstQuickThenSleep:
    """The `sleep` processor, but the first profile's item takes no time and the others 30 s each.

    The batch has one item done and the next one surely under way when the test stops it,
    however long the test takes to get there.
    """

    name = "first_quick_then_sleep"
    description = "The sleep processor: 0 s for p-0, 30 s for the rest."
    schema = Schema

    def process(self, profile: ProfileData, parameters: dict[str, Any], ctx: RunContext) -> Any:
        seconds = 0 if profile.name == "p-0" else 30
        return registry.get("sleep").process(profile, {"seconds": seconds}, ctx)  # type: ignore[union-attr]


@pytest.fixture
def first_quick_then_sleep(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setitem(registry._processors, _FirstQuickThenSleep.name, _FirstQuickThenSleep())
    return _FirstQuickThenSleep.name


@pytest.fixture
def hanging_url() -> Iterator[tuple[str, threading.Event]]:
    """A local URL whose response never comes while the test runs, for the http processor, and an event
    set once a request has arrived there (the item is waiting on its response)."""
    arrived, done = threading.Event(), threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            arrived.set()
            done.wait(60)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/slow", arrived
    done.set()
    server.shutdown()
    server.server_close()


def test_stop_mid_batch_halts_the_item_under_way_promptly_leaves_items_pending_and_pauses_until_start(
    api: ApiClient, app: Flask, celery_worker: Any, first_quick_then_sleep: str
) -> None:
    """Stopped during item 2 (of 30 s), the batch ends within STOP_BOUND_SECONDS (a second is the promise)
    with that item back to pending; its end, and one more promotion, start nothing while paused."""
    profile_ids = api.profiles(5)
    running = api.batch(profile_ids, first_quick_then_sleep, name="long")
    behind = api.batch(profile_ids[:2], "noop", name="behind")
    assert (running["status"], behind["status"], behind["queue_position"]) == ("in_progress", "queued", 1)

    wait_for(lambda: _item_running(api, running["id"], 1), timeout=15)
    response = api.post(f"/batches/{running['id']}/stop")
    acknowledged_at = time.monotonic()
    acknowledged = datetime.now(UTC)
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["status"] == "stopping"
    queue = _queue(api)
    assert queue["paused"] is True and queue["paused_by"] == "token:tests"
    # A stop halts within a second: by this read the batch may be stopping still, or stopped already.
    if queue["running"] is not None:
        assert queue["running"]["id"] == running["id"] and queue["start_enabled"] is False
    assert_queue_consistent(app)

    wait_for(lambda: api.batch_of(running["id"])["status"] == "stopped", timeout=15)
    assert time.monotonic() - acknowledged_at < STOP_BOUND_SECONDS
    stopped = api.batch_of(running["id"])
    assert stopped["queue_position"] is None and stopped["finished_at"] is not None
    assert stopped["progress"] == {"total": 5, "succeeded": 1, "failed": 0, "pending": 4}
    items = api.items_of(running["id"])
    assert [i["status"] for i in items] == ["succeeded"] + ["pending"] * 4
    assert [i["attempts"] for i in items] == [1, 1, 0, 0, 0]  # the interrupted one, then none begun
    assert items[1]["started_at"] is None and items[1]["finished_at"] is None
    assert all(datetime.fromisoformat(i["started_at"]) < acknowledged for i in items if i["started_at"])
    logs = api.log_of(running["id"])
    assert "stop requested by token:tests" in logs
    assert "item 2/5 (p-1) interrupted by the stop; left pending" in logs
    assert logs[-1] == "stopped (4 items left pending)"

    # The run's end chained a promotion; paused, it (and one more) must not start anything.
    promote = app.extensions["celery"].send_task("queue.promote_next", queue="control", ignore_result=False)
    assert promote.get(timeout=10) is None
    sent_tasks.wait_until_run()  # the run's task has returned, and the promotion it chained has run too
    assert (api.batch_of(behind["id"])["status"], api.batch_of(behind["id"])["queue_position"]) == ("queued", 1)
    queue = _queue(api)
    assert queue["paused"] is True and queue["running"] is None and queue["start_enabled"] is True
    assert_queue_consistent(app)

    while_paused = api.batch(profile_ids[:1], "noop", name="while paused")
    assert (while_paused["status"], while_paused["queue_position"]) == ("queued", 2)

    started = api.post("/queue/start")
    assert started.status_code == 200, started.get_json()
    assert started.get_json()["paused"] is False
    assert started.get_json()["running"]["id"] == behind["id"]
    assert "queue started by token:tests" in api.log_of(behind["id"])
    wait_for(lambda: api.batch_of(while_paused["id"])["status"] == "done", timeout=15)
    first, second = api.batch_of(behind["id"]), api.batch_of(while_paused["id"])
    assert first["status"] == "done" and first["finished_at"] <= second["started_at"]
    assert api.batch_of(running["id"])["status"] == "stopped"
    assert _queue(api)["paused"] is False
    assert_queue_consistent(app)


def test_stop_interrupts_a_waiting_http_item_promptly(
    api: ApiClient, app: Flask, celery_worker: Any, hanging_url: tuple[str, threading.Event]
) -> None:
    """The item is waiting on a response that never comes (and a 30 s request timeout): the stop ends it
    within STOP_BOUND_SECONDS (a second is the promise), the item back to pending."""
    url, arrived = hanging_url
    profile_ids = api.profiles(2)
    batch = api.batch(profile_ids, "http", url=url, timeout=30)
    assert arrived.wait(15), "the http item never sent its request"
    assert _item_running(api, batch["id"], 0)
    assert api.post(f"/batches/{batch['id']}/stop").status_code == 200
    acknowledged_at = time.monotonic()
    wait_for(lambda: api.batch_of(batch["id"])["status"] == "stopped", timeout=15)
    assert time.monotonic() - acknowledged_at < STOP_BOUND_SECONDS
    assert [(i["status"], i["attempts"]) for i in api.items_of(batch["id"])] == [("pending", 1), ("pending", 0)]
    assert_queue_consistent(app)


def test_stop_of_a_processor_that_ignores_it_holds_the_slot_as_stopping_until_the_task_halts(
    api: ApiClient, app: Flask, celery_worker: Any, gate: Gate
) -> None:
    profile_ids = api.profiles(3)
    batch = api.batch(profile_ids, gate.name)  # the gate ignores the stop: it lets go when the test opens it
    wait_for(lambda: _item_running(api, batch["id"], 0), timeout=15)
    assert api.post(f"/batches/{batch['id']}/stop").get_json()["status"] == "stopping"

    # While stopping it still holds the running slot: no Start, no second stop, new work waits.
    assert api.post("/queue/start").status_code == 409
    assert api.post(f"/batches/{batch['id']}/stop").status_code == 409
    newcomer = api.batch(profile_ids[:1], "noop", name="newcomer")
    assert (newcomer["status"], newcomer["queue_position"]) == ("queued", 1)
    queue = _queue(api)
    assert queue["running"]["status"] == "stopping" and queue["start_enabled"] is False
    assert api.batch_of(batch["id"])["status"] == "stopping"
    assert_queue_consistent(app)

    gate.open()  # the processor finishes its item: only now does the task halt
    wait_for(lambda: api.batch_of(batch["id"])["status"] == "stopped", timeout=15)
    # The item under way when the stop came finished its work; nothing after it began.
    assert [(i["status"], i["attempts"]) for i in api.items_of(batch["id"])] == [
        ("succeeded", 1),
        ("pending", 0),
        ("pending", 0),
    ]
    sent_tasks.wait_until_run()  # the run's task returned and chained a promotion, which has run: paused, nothing
    assert api.batch_of(newcomer["id"])["status"] == "queued"
    assert_queue_consistent(app)


def test_stop_between_items_keeps_the_next_item_from_starting_even_before_the_watcher_looks(
    api: ApiClient, app: Flask, celery_worker: Any, gate: Gate, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.services.runs import watcher

    # The watcher does not look for a minute: only the batch row lock
    # taken to start each item stands between the stop and item 2.
    monkeypatch.setattr(watcher, "STOP_POLL_SECONDS", 60.0)
    profile_ids = api.profiles(3)
    batch = api.batch(profile_ids, gate.name)
    wait_for(lambda: _item_running(api, batch["id"], 0), timeout=15)
    assert api.post(f"/batches/{batch['id']}/stop").get_json()["status"] == "stopping"
    gate.open()  # item 1 ends after the stop is committed
    wait_for(lambda: api.batch_of(batch["id"])["status"] == "stopped", timeout=15)
    assert [(i["status"], i["attempts"]) for i in api.items_of(batch["id"])] == [
        ("succeeded", 1),
        ("pending", 0),
        ("pending", 0),
    ]
    assert api.log_of(batch["id"])[-1] == "stopped (2 items left pending)"
    assert_queue_consistent(app)


def test_stop_and_start_refuse_with_409_in_every_forbidden_state(
    api: ApiClient, app: Flask, celery_worker: Any
) -> None:
    profile_ids = api.profiles(1)
    assert api.post("/batches/999/stop").status_code == 404
    running = api.batch(profile_ids, "sleep", name="running", seconds=30)
    queued = api.batch(profile_ids, "noop", name="queued")

    refused = api.post(f"/batches/{queued['id']}/stop")
    assert refused.status_code == 409 and refused.get_json()["error"]["code"] == "conflict"
    assert api.post("/queue/start").status_code == 409
    assert api.batch_of(queued["id"])["status"] == "queued" and _queue(api)["paused"] is False

    assert api.post(f"/batches/{running['id']}/stop").status_code == 200
    wait_for(lambda: api.batch_of(running["id"])["status"] == "stopped", timeout=15)
    assert api.post(f"/batches/{running['id']}/stop").status_code == 409  # stopped
    assert api.post("/queue/start").status_code == 200
    wait_for(lambda: api.batch_of(queued["id"])["status"] == "done", timeout=15)
    assert api.post(f"/batches/{queued['id']}/stop").status_code == 409  # done
    assert api.batch_of(running["id"])["status"] == "stopped"
    assert_queue_consistent(app)


def test_cancel_and_move_refuse_with_409_unless_queued(api: ApiClient, app: Flask, celery_worker: Any) -> None:
    profile_ids = api.profiles(1)
    running = api.batch(profile_ids, "sleep", name="running", seconds=30)
    queued = api.batch(profile_ids, "noop", name="queued")
    cancelled = api.batch(profile_ids, "noop", name="cancelled")
    assert api.post(f"/batches/{cancelled['id']}/cancel").status_code == 200

    for batch in (running, cancelled):
        for action, body in (("cancel", None), ("move", {"position": 1})):
            response = api.post(f"/batches/{batch['id']}/{action}", body)
            assert response.status_code == 409, (batch["name"], action)
            assert response.get_json()["error"]["code"] == "conflict"
    assert api.post("/batches/999/cancel").status_code == 404
    assert api.post("/batches/999/move", {"position": 1}).status_code == 404
    assert api.batch_of(running["id"])["status"] == "in_progress"
    assert api.batch_of(cancelled["id"])["status"] == "cancelled"
    assert _positions(api, [running["id"], queued["id"], cancelled["id"]]) == {
        running["id"]: 0,
        queued["id"]: 1,
        cancelled["id"]: None,
    }
    assert_queue_consistent(app)

    assert api.post(f"/batches/{running['id']}/stop").status_code == 200
    wait_for(lambda: api.batch_of(running["id"])["status"] == "stopped", timeout=15)
    for action, body in (("cancel", None), ("move", {"position": 1})):
        assert api.post(f"/batches/{running['id']}/{action}", body).status_code == 409  # stopped
    assert_queue_consistent(app)


def test_move_to_front_back_past_the_end_and_middle_keeps_positions_gapless(
    api: ApiClient, app: Flask, celery_worker: Any
) -> None:
    profile_ids = api.profiles(1)
    api.batch(profile_ids, "sleep", name="running", seconds=30)
    b1, b2, b3, b4, b5 = (api.batch(profile_ids, "noop", name=f"b{n}")["id"] for n in range(1, 6))
    assert api.queued_order() == [b1, b2, b3, b4, b5]

    steps = [
        (b5, 1, 1, [b5, b1, b2, b3, b4]),  # to the front
        (b5, 99, 5, [b1, b2, b3, b4, b5]),  # past the end means last
        (b2, 4, 4, [b1, b3, b4, b2, b5]),  # down into the middle
        (b2, 2, 2, [b1, b2, b3, b4, b5]),  # up into the middle
        (b3, 3, 3, [b1, b2, b3, b4, b5]),  # where it already is
        (b1, 5, 5, [b2, b3, b4, b5, b1]),  # to the back
    ]
    for batch_id, position, landed, expected in steps:
        response = api.post(f"/batches/{batch_id}/move", {"position": position})
        assert response.status_code == 200, response.get_json()
        assert (response.get_json()["status"], response.get_json()["queue_position"]) == ("queued", landed)
        assert api.queued_order() == expected, (batch_id, position)
        assert_queue_consistent(app)
    logs = api.log_of(b5)
    assert "moved from #5 to #1 by token:tests" in logs and "moved from #1 to #5 by token:tests" in logs
    assert not any(line.startswith("moved") for line in api.log_of(b3))  # moving in place writes nothing


def test_cancel_front_back_and_middle_closes_the_gap(api: ApiClient, app: Flask, celery_worker: Any) -> None:
    profile_ids = api.profiles(1)
    api.batch(profile_ids, "sleep", name="running", seconds=30)
    b1, b2, b3, b4, b5 = (api.batch(profile_ids, "noop", name=f"b{n}")["id"] for n in range(1, 6))

    for batch_id, expected in ((b1, [b2, b3, b4, b5]), (b5, [b2, b3, b4]), (b3, [b2, b4])):
        response = api.post(f"/batches/{batch_id}/cancel")
        assert response.status_code == 200, response.get_json()
        body = response.get_json()
        assert (body["status"], body["queue_position"]) == ("cancelled", None) and body["finished_at"]
        assert api.queued_order() == expected
        assert api.log_of(batch_id)[-1] == "cancelled by token:tests"
        assert_queue_consistent(app)
    assert api.post(f"/batches/{b4}/move", {"position": 1}).get_json()["queue_position"] == 1
    assert api.queued_order() == [b4, b2]
    assert_queue_consistent(app)
