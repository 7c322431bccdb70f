"""Queue controls racing each other and the real worker: every race ends in a consistent queue."""

from __future__ import annotations

import random
import re
import time
from typing import Any

import pytest
from flask import Flask

from app.errors import Conflict
from app.extensions import db
from app.services import queue_manager
from app.services.queue_manager import NewBatch
from tests.conftest import (
    ApiClient,
    assert_queue_consistent,
    insert_profiles,
    queue_violations,
    run_in_threads,
    sent_tasks,
    wait_for,
)

pytestmark = pytest.mark.usefixtures("settled")

_MOVED = re.compile(r"moved from #(\d+) to #(\d+) by ")


def _client(app: Flask, api: ApiClient) -> ApiClient:
    """A client of its own, for one thread."""
    client = ApiClient(app.test_client(), "")
    client.headers = dict(api.headers)
    return client


def _batch(api: ApiClient, batch_id: int) -> dict[str, Any]:
    return api.get(f"/batches/{batch_id}").get_json()


def _pause(app: Flask) -> None:
    """Pause the queue as a stop would, without a batch to stop."""
    with app.app_context():
        db.session.execute(db.text("UPDATE queue_state SET paused = true, paused_by = 'test', paused_at = now()"))
        db.session.commit()


def _stop_running(api: ApiClient) -> None:
    """Stop the running batch and wait for its run's end, and for the promotion that end chains.

    A promotion still on its way would otherwise meet the next round's un-paused queue and start its head.
    """
    running = api.get("/queue").get_json()["running"]
    if running is not None:
        assert api.post(f"/batches/{running['id']}/stop").status_code == 200
        wait_for(lambda: api.get("/queue").get_json()["running"] is None, timeout=15)
        sent_tasks.wait_until_run()


def test_stop_racing_the_natural_finish_ends_stopped_and_paused_or_done_and_moving(
    api: ApiClient, app: Flask, celery_worker: Any
) -> None:
    profile_ids = api.profiles(1)
    clients = [_client(app, api), _client(app, api)]
    outcomes: list[str] = []
    # The stops leave at once; the one-item runs last from "surely longer than the
    # stop takes" (30 s: the stop interrupts it) down through the few milliseconds
    # around it. The last pair of stops leaves only once its batch has finished, so
    # both outcomes come up however slow the machine is. The delays are the race's
    # windows, not a synchronization.
    runs: list[tuple[float, float | None]] = [
        (seconds, 0.0) for seconds in (30.0, 0.06, 0.045, 0.035, 0.03, 0.025, 0.02, 0.015, 0.01, 0.005, 0.0)
    ]
    runs += [(0.0, None)]
    for seconds, delay in runs:
        target = api.batch(profile_ids, "sleep", name=f"target {seconds} {delay}", seconds=seconds)
        behind = api.batch(profile_ids, "noop", name=f"behind {seconds} {delay}")
        # It started at once; a run of a few milliseconds may even have finished before the answer was read.
        assert target["status"] in ("in_progress", "done"), target["status"]

        def stop(index: int) -> int:
            if delay is None:
                wait_for(lambda: _batch(clients[index], target["id"])["finished_at"], timeout=15)
            else:
                time.sleep(delay)
            return clients[index].post(f"/batches/{target['id']}/stop").status_code

        codes = sorted(run_in_threads(2, stop))
        assert_queue_consistent(app)
        ended = wait_for(lambda: (b := _batch(api, target["id"]))["finished_at"] and b, timeout=15)
        items = api.get(f"/batches/{target['id']}/items").get_json()["items"]
        assert all(item["status"] in ("succeeded", "pending") for item in items)
        queue = api.get("/queue").get_json()
        if codes == [200, 409]:  # the stop won: stopped, paused, nothing promoted
            outcomes.append("stopped")
            assert ended["status"] == "stopped", (seconds, delay)
            assert queue["paused"] is True and queue["paused_by"] == "token:tests"
            assert queue["running"] is None
            promote = app.extensions["celery"].send_task("queue.promote_next", queue="control", ignore_result=False)
            assert promote.get(timeout=10) is None
            sent_tasks.wait_until_run()  # and the promotion the run's end chained, if it ended after the stop
            assert _batch(api, behind["id"])["status"] == "queued"
            assert api.post("/queue/start").status_code == 200
        else:  # the finish won: both stops refused, the queue moves on by itself
            outcomes.append("done")
            assert codes == [409, 409], (seconds, delay, codes)
            assert ended["status"] == "done" and queue["paused"] is False
        wait_for(lambda: _batch(api, behind["id"])["status"] == "done", timeout=15)
        # And the promotion its end chained: run late, it would start the next target itself, and that
        # target's creation, finding the slot free as it committed, would answer "queued".
        sent_tasks.wait_until_run()
        assert_queue_consistent(app)
    assert set(outcomes) == {"stopped", "done"}, outcomes


def test_move_and_cancel_racing_promotion_never_start_a_moved_away_or_cancelled_batch(
    api: ApiClient, app: Flask, celery_worker: Any
) -> None:
    profile_ids = api.profiles(1)
    _pause(app)
    for n in range(4):
        api.batch(profile_ids, "sleep", name=f"seed {n}", seconds=5)
    clients = [_client(app, api) for _ in range(3)]
    celery = app.extensions["celery"]
    for round_ in range(8):
        head, second = api.queued_order()[:2]
        by_task = round_ % 2 == 1

        def act(index: int) -> Any:
            if index == 0:  # the promotion: Start, or the promotion task after a lost signal
                if by_task:
                    return celery.send_task("queue.promote_next", queue="control", ignore_result=False).get(timeout=10)
                return clients[0].post("/queue/start").status_code
            if index == 1:
                return clients[1].post(f"/batches/{head}/move", {"position": 99}).status_code
            return clients[2].post(f"/batches/{second}/cancel").status_code

        if by_task:  # un-paused, slot free, nobody promoted yet
            with app.app_context():
                db.session.execute(db.text("UPDATE queue_state SET paused = false, paused_by = NULL"))
                db.session.commit()
        promoted, moved, cancelled = run_in_threads(3, act)
        assert_queue_consistent(app)
        running = api.get("/queue").get_json()["running"]
        assert running is not None and running["status"] == "in_progress"
        if by_task:
            assert promoted == running["id"]
        else:
            assert promoted == 200
        # A 409 means the promotion came first and took that very batch.
        assert (moved == 409) == (running["id"] == head), (moved, running["id"], head)
        assert (cancelled == 409) == (running["id"] == second), (cancelled, running["id"], second)
        assert moved in (200, 409) and cancelled in (200, 409)
        if cancelled == 200:
            assert _batch(api, second)["status"] == "cancelled"
        if moved == 200:
            assert api.queued_order()[-1] == head
        started = api.get("/batches?status=in_progress").get_json()["total"]
        assert started == 1
        _stop_running(api)  # pauses the queue again for the next round
        assert_queue_consistent(app)
        for n in range(2):
            api.batch(profile_ids, "sleep", name=f"refill {round_}.{n}", seconds=5)


def test_20_concurrent_moves_and_cancels_keep_positions_gapless_and_match_their_log(
    app_ctx: Flask, celery_worker: Any
) -> None:
    profile_ids = insert_profiles(1)
    _pause(app_ctx)
    ids = []
    for n in range(16):
        batch, _ = queue_manager.enqueue(
            NewBatch(name=f"b{n}", processor="noop", parameters={}, profile_ids=profile_ids, created_by="test")
        )
        ids.append(batch.id)
    rng = random.Random(20)

    for round_ in range(3):
        plan = [(rng.choice(ids), rng.random() < 0.25, rng.randint(1, 20)) for _ in range(20)]

        def act(index: int) -> str:
            batch_id, cancel, position = plan[index]
            with app_ctx.app_context():
                try:
                    if cancel:
                        queue_manager.cancel(batch_id, f"thread-{round_}-{index}")
                    else:
                        queue_manager.move(batch_id, position, f"thread-{round_}-{index}")
                    return "ok"
                except Conflict:
                    return "conflict"
                finally:
                    db.session.remove()

        results = run_in_threads(20, act)
        assert queue_violations() == []
        # Only cancelled batches refuse: a queued one can always be moved or cancelled.
        for (batch_id, _, _), result in zip(plan, results, strict=True):
            status = db.session.scalar(db.text("SELECT status FROM batches WHERE id = :id"), {"id": batch_id})
            assert status in ("queued", "cancelled")
            if result == "conflict":
                assert status == "cancelled"
        db.session.rollback()

    # Replaying the log lines in commit order gives the final queue, and every
    # "moved from #a" names where the batch really was at that moment.
    order = list(ids)
    lines = db.session.execute(
        db.text(
            "SELECT batch_id, message FROM batch_logs WHERE message LIKE 'moved %' OR message LIKE 'cancelled %'"
            " ORDER BY id"
        )
    ).all()
    for line in lines:
        if line.message.startswith("cancelled"):
            order.remove(line.batch_id)
            continue
        start, target = (int(n) for n in _MOVED.match(line.message).groups())
        assert order.index(line.batch_id) + 1 == start, line
        order.remove(line.batch_id)
        order.insert(target - 1, line.batch_id)
    queued = (
        db.session.execute(db.text("SELECT id FROM batches WHERE status = 'queued' ORDER BY queue_rank"))
        .scalars()
        .all()
    )
    assert list(queued) == order
    assert any(line.message.startswith("cancelled") for line in lines)
    assert sum(line.message.startswith("moved") for line in lines) >= 20
    assert queue_violations() == []


def test_start_pressed_twice_at_once_promotes_exactly_one_batch(api: ApiClient, app: Flask, celery_worker: Any) -> None:
    profile_ids = api.profiles(1)
    clients = [_client(app, api), _client(app, api)]

    def start(index: int) -> int:
        return clients[index].post("/queue/start").status_code

    # Idle and empty: both succeed, and there is nothing to promote.
    assert run_in_threads(2, start) == [200, 200]
    assert api.get("/queue").get_json() == {**api.get("/queue").get_json(), "paused": False, "running": None}

    _pause(app)
    for n in range(3):
        api.batch(profile_ids, "sleep", name=f"b{n}", seconds=5)
    for _ in range(3):
        head = api.queued_order()[0]
        assert sorted(run_in_threads(2, start)) == [200, 409]
        assert_queue_consistent(app)
        queue = api.get("/queue").get_json()
        assert queue["paused"] is False and queue["running"]["id"] == head
        assert api.get("/batches?status=in_progress").get_json()["total"] == 1
        with app.app_context():
            started = db.session.scalar(
                db.text("SELECT count(*) FROM batch_logs WHERE batch_id = :id AND message LIKE 'queue started by %'"),
                {"id": head},
            )
            db.session.rollback()
        assert started == 1
        _stop_running(api)
        assert_queue_consistent(app)
    assert api.queued_order() == []


def test_drain_racing_the_running_batchs_end_pauses_before_the_next_promotion_or_finds_nothing_running(
    api: ApiClient, app: Flask, celery_worker: Any, gate: Any
) -> None:
    """A drain answered while batch A ran must keep B from starting; one answered later finds nothing or B."""
    profile_ids = api.profiles(1)
    seen: set[str] = set()
    # The drain leaves that long after the gate opens: from before A's end, through it, to after B started.
    for delay in ("before", None, 0.0, 0.002, 0.005, 0.01, 0.02, 0.05, "after"):
        gate.opened.clear()
        a = api.batch(profile_ids, "gate", name=f"a {delay}")
        b = api.batch(profile_ids, "sleep", name=f"b {delay}", seconds=30)
        assert (a["status"], b["status"]) == ("in_progress", "queued")
        clients = [_client(app, api), _client(app, api)]

        def act(index: int) -> dict[str, Any] | None:
            if index == 0:
                if delay == "before":
                    wait_for(lambda: clients[0].get("/queue").get_json()["draining"], timeout=15)
                gate.open()
                return None
            if delay in (None, "before"):
                pass
            elif delay == "after":
                wait_for(lambda: _batch(clients[1], b["id"])["status"] == "in_progress", timeout=15)
            else:
                time.sleep(float(delay))
            return clients[1].post("/queue/drain").get_json()

        answered = run_in_threads(2, act)[1]
        assert answered is not None
        wait_for(lambda: _batch(api, a["id"])["status"] == "done", timeout=15)
        # The promotion A's end chains has run, one way or the other: it paused the queue for the drain, or
        # started B. (A's status is written before its task's success signal sends that promotion, so
        # waiting only for the promotions sent so far could come too early.)
        wait_for(
            lambda: api.get("/queue").get_json()["paused"] or _batch(api, b["id"])["status"] != "queued",
            timeout=15,
        )
        sent_tasks.wait_until_run("queue.promote_next")  # (B's run may go on)
        queue = api.get("/queue").get_json()
        b_now = _batch(api, b["id"])["status"]
        drained_for = answered["running"]["id"] if answered["running"] else None
        assert_queue_consistent(app)
        if drained_for == a["id"] or drained_for is None:  # the drain came before B's promotion
            seen.add("a" if drained_for else "nothing")
            assert b_now == "queued", (delay, answered)
            assert (queue["paused"], queue["paused_reason"], queue["draining"]) == (True, "drained", False)
        else:  # B was promoted first: the drain waits for B's end
            seen.add("b")
            assert drained_for == b["id"] and b_now == "in_progress", (delay, answered)
            assert (queue["paused"], queue["draining"]) == (False, True)
            _stop_running(api)
        api.post(f"/batches/{b['id']}/cancel")  # still queued, unless B runs: then the stop above ended it
        _stop_running(api)
        assert api.post("/queue/start").status_code == 200
    assert {"a", "b"} <= seen, seen


def test_resume_and_move_racing_a_promotion_keep_the_queue_whole_and_start_one_batch_at_a_time(
    api: ApiClient, app: Flask, celery_worker: Any, gate: Any
) -> None:
    profile_ids = api.profiles(1)
    stopped = []
    for n in range(4):  # four stopped batches, each stopped while its item ran
        batch = api.batch(profile_ids, "sleep", name=f"stopped {n}", seconds=30)
        wait_for(lambda b=batch: api.items_of(b["id"])[0]["status"] == "running", timeout=15)
        _stop_running(api)
        assert _batch(api, batch["id"])["status"] == "stopped"
        stopped.append(batch["id"])
        assert api.post("/queue/start").status_code == 200
    with app.app_context():  # resumed, their one item is quick (the test's shortcut, not a feature)
        db.session.execute(db.text("UPDATE batches SET parameters = '{\"seconds\": 0}' WHERE status = 'stopped'"))
        db.session.commit()
        db.session.remove()
    gate.opened.clear()
    running = api.batch(profile_ids, "gate", name="running")
    queued = [api.batch(profile_ids, "noop", name=f"q{n}")["id"] for n in range(3)]
    clients = [_client(app, api) for _ in range(6)]

    def act(index: int) -> int:
        if index == 0:
            gate.open()  # the running batch ends; its promotion races the resumes and moves
            return 200
        if index <= 4:
            return clients[index].post(f"/batches/{stopped[index - 1]}/resume", {"position": index}).status_code
        return clients[index].post(f"/batches/{queued[-1]}/move", {"position": 1}).status_code

    codes = run_in_threads(6, act)
    assert codes[:5] == [200] * 5 and codes[5] in (200, 409)
    assert_queue_consistent(app)
    every = [running["id"], *queued, *stopped]
    wait_for(lambda: all(_batch(api, batch_id)["status"] == "done" for batch_id in every), timeout=30)
    assert_queue_consistent(app)
    for batch_id in stopped:
        log = api.log_of(batch_id)
        assert any(line.startswith("resumed by token:tests at #") for line in log), log
        assert log.count("started") == 2
