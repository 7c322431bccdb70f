"""Batches run one at a time, in creation order, with a real Celery worker, promoted by the signal chain."""

from __future__ import annotations

import itertools
from typing import Any

from flask import Flask

from app.extensions import db
from tests.conftest import ApiClient, Gate, held_leases, queue_violations, wait_for


def _all_finished(api: ApiClient, count: int) -> list[dict]:
    body = api.get("/batches?per_page=500").get_json()
    finished = [b for b in body["items"] if b["finished_at"]]
    return finished if len(finished) == count else []


def test_chain_runs_in_creation_order_without_overlap_and_a_failure_does_not_block(
    api: ApiClient, app: Flask, celery_worker: Any, gate: Gate
) -> None:
    profile_ids = api.profiles(2)
    created = [api.batch(profile_ids, gate.name, name="b0")]  # it runs until the others are created
    for index in range(1, 6):
        fail = ["p-1"] if index == 2 else []
        created.append(api.batch(profile_ids, "sleep", name=f"b{index}", seconds=0.05, fail_profiles=fail))
    assert [b["status"] for b in created] == ["in_progress"] + ["queued"] * 5
    assert [b["queue_position"] for b in created] == [0, 1, 2, 3, 4, 5]
    gate.open()

    finished = sorted(wait_for(lambda: _all_finished(api, 6), timeout=30), key=lambda b: b["id"])
    assert [b["status"] for b in finished] == ["done", "done", "failed", "done", "done", "done"]
    assert finished[2]["error"] == "1 of 2 items failed"
    assert all(b["queue_position"] is None for b in finished)
    for earlier, later in itertools.pairwise(finished):
        assert earlier["finished_at"] <= later["started_at"], (earlier, later)
    with app.app_context():
        assert queue_violations() == []
        assert held_leases() == []  # each run's end gave its lease back in the statement that ended it


def test_items_record_status_attempts_result_and_log(api: ApiClient, app: Flask, celery_worker: Any) -> None:
    profile_ids = api.profiles(3)
    batch = api.batch(profile_ids, "sleep", seconds=0, fail_profiles=["p-1"])
    wait_for(lambda: api.get(f"/batches/{batch['id']}").get_json()["finished_at"], timeout=15)
    done = api.get(f"/batches/{batch['id']}").get_json()
    assert done["progress"] == {"total": 3, "succeeded": 2, "failed": 1, "pending": 0}
    items = api.get(f"/batches/{batch['id']}/items").get_json()["items"]
    assert [i["status"] for i in items] == ["succeeded", "failed", "succeeded"]
    assert all(i["attempts"] == 1 and i["started_at"] <= i["finished_at"] for i in items)
    assert items[1]["error"] == "profile p-1 is listed in fail_profiles"
    assert items[0]["result"] == {"slept": 0}
    logs = [line["message"] for line in api.get(f"/batches/{batch['id']}/logs").get_json()["items"]]
    assert logs[0].startswith("created by token:tests")
    assert "started" in logs
    assert logs[-1] == "finished: failed (1 of 3 items failed)"
    assert sum("item " in line for line in logs) == 3
    with app.app_context():
        db.session.remove()


def _waiting_for_the_queue_lock(app: Flask) -> int:
    """How many sessions of the test database wait for the queue lock (the queue_state row) right now."""
    with app.app_context():
        count = db.session.scalar(
            db.text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND wait_event_type = 'Lock' AND query LIKE '%queue_state.paused%FOR UPDATE'"
            )
        )
        db.session.remove()
    return int(count)


def test_a_run_ends_while_another_queue_change_holds_the_queue_lock_and_the_next_starts_after_it(
    api: ApiClient, app: Flask, celery_worker: Any, gate: Gate
) -> None:
    """A run's end only frees the running slot: it needs its batch's row, not the queue lock."""
    profile_ids = api.profiles(1)
    running = api.batch(profile_ids, gate.name)
    behind = api.batch(profile_ids, "noop")
    with app.app_context(), db.engine.connect() as other_change:
        other_change.execute(db.text("SELECT 1 FROM queue_state FOR UPDATE"))  # the queue lock, held
        gate.open()  # the run ends only now, with the lock held elsewhere
        wait_for(lambda: api.get(f"/batches/{running['id']}").get_json()["status"] == "done", timeout=15)
        wait_for(lambda: _waiting_for_the_queue_lock(app), timeout=15)  # the run's promotion has come, and waits
        assert api.get(f"/batches/{behind['id']}").get_json()["status"] == "queued"
        other_change.rollback()
    wait_for(lambda: api.get(f"/batches/{behind['id']}").get_json()["status"] == "done", timeout=15)
