"""Heartbeats and repair timers of workers and beats (workers/liveness.py), against real PostgreSQL."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask

from app.extensions import db
from app.services import liveness
from app.services.liveness import ProcessRecord
from tests.conftest import ApiClient, wait_for
from workers.liveness import ProcessLife


def _alive_names(app: Flask) -> list[str]:
    with app.app_context():
        names = [process.name for process in liveness.alive()]
        db.session.rollback()
        return names


@pytest.fixture
def lives(app: Flask, clean: None) -> Iterator[list[ProcessLife]]:
    started: list[ProcessLife] = []
    yield started
    for life in started:
        life.stop()


def _record(name: str, kind: str = "worker") -> ProcessRecord:
    return ProcessRecord(name=name, kind=kind, host="testhost", pid=os.getpid(), pool="prefork", concurrency=2)


def test_a_started_process_is_alive_and_a_graceful_stop_removes_its_record(
    app: Flask, lives: list[ProcessLife]
) -> None:
    life = ProcessLife(app, _record("celery@graceful"), repair_every=None).start()
    lives.append(life)
    assert "celery@graceful" in _alive_names(app)
    life.stop()
    with app.app_context():
        assert db.session.scalar(db.text("SELECT count(*) FROM service_processes WHERE name = 'celery@graceful'")) == 0


def test_heartbeats_keep_a_record_fresh_and_a_silent_one_ages_out_within_three_beats(
    app: Flask, lives: list[ProcessLife]
) -> None:
    life = ProcessLife(app, _record("celery@beating"), repair_every=None).start()
    lives.append(life)
    with app.app_context():
        # Aged and read in one transaction: the row lock keeps the next heartbeat from landing in between,
        # however late this test runs after the start.
        db.session.execute(
            db.text("UPDATE service_processes SET last_seen_at = now() - interval '10 seconds' WHERE name = :n"),
            {"n": "celery@beating"},
        )
        assert "celery@beating" not in [process.name for process in liveness.alive()]  # silent for three beats
        db.session.commit()
    wait_for(lambda: "celery@beating" in _alive_names(app), timeout=15)  # the next heartbeat (one a second)


def test_the_worker_record_names_the_batch_its_run_holds(
    api: ApiClient, app: Flask, celery_worker: Any, settled: None
) -> None:
    batch = api.batch(api.profiles(1), "sleep", seconds=30)

    def running_on() -> Any:
        with app.app_context():
            found = {process.name: process.batch for process in liveness.alive()}
            db.session.rollback()
        return found.get(celery_worker.hostname) == batch["id"]

    wait_for(running_on, timeout=10)
    assert api.post(f"/batches/{batch['id']}/stop").status_code == 200
    wait_for(lambda: not running_on(), timeout=10)


def test_a_repair_timer_promotes_a_head_left_waiting_without_any_task_or_beat(
    api: ApiClient, app: Flask, celery_worker: Any, lives: list[ProcessLife], settled: None
) -> None:
    with app.app_context():
        db.session.execute(db.text("UPDATE queue_state SET paused = true"))
        db.session.commit()
    waiting = api.batch(api.profiles(1))
    with app.app_context():  # un-paused behind the queue manager's back: as after a lost promotion
        db.session.execute(db.text("UPDATE queue_state SET paused = false"))
        db.session.commit()
    assert api.get(f"/batches/{waiting['id']}").get_json()["status"] == "queued"

    app.config["RECONCILE_INTERVAL"] = 0.3
    try:
        lives.append(ProcessLife(app, _record("celery@repairing"), repair_every=0.3).start())
        wait_for(lambda: api.get(f"/batches/{waiting['id']}").get_json()["status"] == "done", timeout=10)
    finally:
        app.config["RECONCILE_INTERVAL"] = 5.0


def test_a_round_within_the_gap_of_another_processs_round_is_skipped(app: Flask, clean: None) -> None:
    from app.services import queue_repairs

    def stamp_after_round() -> Any:
        with app.app_context():
            queue_repairs.recover_lost_run(heartbeat_timeout=30, stop_grace=30, min_gap=60)
            stamp = db.session.scalar(db.text("SELECT repaired_at FROM queue_state"))
            db.session.rollback()
            return stamp

    first = stamp_after_round()  # repaired_at was NULL: this round runs and stamps it
    assert first is not None
    assert stamp_after_round() == first  # another process's round a moment ago: skipped
    with app.app_context():
        db.session.execute(db.text("UPDATE queue_state SET repaired_at = now() - interval '61 seconds'"))
        db.session.commit()
    assert stamp_after_round() > first  # the gap has passed: this round runs


def test_a_batchs_claimer_counts_as_gone_when_its_record_aged_or_it_restarted_not_when_it_left_gracefully(
    app: Flask, api: ApiClient
) -> None:
    with app.app_context():
        db.session.execute(db.text("UPDATE queue_state SET paused = true"))  # the batch stays where it is put
        db.session.commit()
    batch = api.batch(api.profiles(1))
    with app.app_context(), db.engine.connect() as connection:
        db.session.execute(
            db.text("UPDATE batches SET worker_name = 'celery@claimer', heartbeat_at = now() WHERE id = :id"),
            {"id": batch["id"]},
        )
        db.session.commit()

        def gone() -> bool:
            answer = liveness.claimer_gone(batch["id"])
            db.session.rollback()
            return answer

        def update(assignment: str) -> None:
            connection.execute(db.text(f"UPDATE service_processes SET {assignment} WHERE name = 'celery@claimer'"))
            connection.commit()

        assert not gone()  # no record at all: left gracefully (or never recorded); the heartbeat decides
        liveness.record(connection, _record("celery@claimer"))
        connection.commit()
        update("started_at = now() - interval '1 minute'")
        assert not gone()  # alive, and the same process as the run's
        update("last_seen_at = now() - interval '10 seconds'")
        assert gone()  # killed: its record aged
        update("last_seen_at = now(), started_at = now() + interval '1 second'")
        assert gone()  # killed and started again under the same name
        liveness.forget(connection, "celery@claimer")
        connection.commit()


def test_beat_schedules_no_task_so_flower_lists_work_not_housekeeping(app: Flask) -> None:
    # Repairs run on timers inside workers and beats; a scheduled queue.reconcile every few
    # seconds pushed the runs operators look for off Flower's first page.
    assert app.extensions["celery"].conf.beat_schedule == {}
