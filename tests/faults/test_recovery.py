"""Faults on the in-process worker: duplicate and stale deliveries, lost runs, lost signals."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import Connection

from app.extensions import db
from app.models._types import utcnow
from app.services import dispatch, leases, queue_repairs
from app.services.queue_repairs import MAX_RUN_ATTEMPTS, LeaseStillHeld
from tests.conftest import ApiClient, Gate, run_in_threads, sent_tasks, wait_for
from tests.faults.helpers import (
    age_heartbeat,
    batch_row,
    batch_status,
    item_rows,
    lease_free,
    log_lines,
    run_sql,
    send_and_wait,
    violations,
)

pytestmark = [pytest.mark.faults, pytest.mark.usefixtures("settled")]


real_send_run = dispatch.send_run


@pytest.fixture
def unsent(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, str]]:
    """Record run dispatches instead of sending them: a message that is never consumed."""
    calls: list[tuple[int, str]] = []
    monkeypatch.setattr(dispatch, "send_run", lambda batch_id, token: calls.append((batch_id, token)))
    return calls


@pytest.fixture
def revoked(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record hard stops instead of broadcasting them (the threads pool can't terminate a task)."""
    calls: list[str] = []
    monkeypatch.setattr(dispatch, "revoke_run", calls.append)
    return calls


@pytest.fixture
def lease(app: Flask) -> Iterator[Any]:
    """Take a batch's lease on a connection of our own, as a run that just began would.

    `invalidate()` on the returned connection is the run's death: the database
    session ends (a plain close would only hand it back to the pool, lock and all).
    """
    held: list[Connection] = []

    def take(batch_id: int) -> Connection:
        connection = db.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        assert leases.try_acquire(connection, batch_id)
        held.append(connection)
        return connection

    with app.app_context():
        yield take
        for connection in held:
            connection.invalidate()
            connection.close()


def test_run_delivered_twice_while_running_returns_duplicate_and_runs_each_item_once(
    api: ApiClient, app: Flask, celery_worker: Any, gate: Gate
) -> None:
    profile_ids = api.profiles(4)
    batch = api.batch(profile_ids, gate.name)  # running until the gate opens
    behind = api.batch(profile_ids[:1], "noop", name="behind")
    wait_for(lambda: item_rows(app, batch["id"])[0].status == "running", timeout=15)
    token = batch_row(app, batch["id"]).dispatch_token

    assert send_and_wait(app, "batches.run", batch["id"], token, task_id=token) == "duplicate"
    # The duplicate's end chains a promotion too: once it has run, it has promoted nothing.
    sent_tasks.wait_until_run("queue.promote_next")
    assert batch_status(app, behind["id"]) == "queued"

    gate.open()
    wait_for(lambda: batch_status(app, behind["id"]) == "done", timeout=15)
    row = batch_row(app, batch["id"])
    assert (row.status, row.run_attempts, row.succeeded_items) == ("done", 1, 4)
    assert [item.attempts for item in item_rows(app, batch["id"])] == [1, 1, 1, 1]
    assert sum(line.startswith("run began") for line in log_lines(app, batch["id"])) == 1
    assert row.finished_at <= batch_row(app, behind["id"]).started_at
    assert violations(app) == []


def test_run_with_a_stale_token_returns_stale_and_writes_nothing(
    api: ApiClient, app: Flask, celery_worker: Any, unsent: list[tuple[int, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    profile_ids = api.profiles(3)
    batch = api.batch(profile_ids, "noop")
    [(_, old_token)] = unsent
    age_heartbeat(app, batch["id"])
    with app.app_context():
        queue_repairs.recover_lost_run(heartbeat_timeout=1, stop_grace=30)
    [_, (_, new_token)] = unsent
    assert new_token != old_token
    before = (batch_row(app, batch["id"]), item_rows(app, batch["id"]), log_lines(app, batch["id"]))

    assert send_and_wait(app, "batches.run", batch["id"], old_token, task_id=old_token) == "stale"
    assert (batch_row(app, batch["id"]), item_rows(app, batch["id"]), log_lines(app, batch["id"])) == before

    monkeypatch.undo()
    assert send_and_wait(app, "batches.run", batch["id"], new_token, task_id=new_token) == "done"
    assert [item.attempts for item in item_rows(app, batch["id"])] == [1, 1, 1]
    assert batch_row(app, batch["id"]).run_attempts == 1
    # A late redelivery after the end is stale too, and changes nothing.
    after = (batch_row(app, batch["id"]), item_rows(app, batch["id"]), log_lines(app, batch["id"]))
    assert send_and_wait(app, "batches.run", batch["id"], new_token, task_id=new_token) == "stale"
    assert (batch_row(app, batch["id"]), item_rows(app, batch["id"]), log_lines(app, batch["id"])) == after
    assert violations(app) == []


def test_run_replaced_during_its_last_item_writes_neither_that_item_nor_the_end(
    api: ApiClient,
    app: Flask,
    celery_worker: Any,
    unsent: list[tuple[int, str]],
    monkeypatch: pytest.MonkeyPatch,
    gate: Gate,
) -> None:
    # The last item's outcome is written with the batch's end: both must be fenced together.
    profile_ids = api.profiles(2)
    batch = api.batch(profile_ids, gate.name, hold=["p-1"])  # the last item holds until the gate opens
    [(_, token)] = unsent
    monkeypatch.undo()
    outcome: list[Any] = []
    runner = threading.Thread(
        target=lambda: outcome.append(send_and_wait(app, "batches.run", batch["id"], token, task_id=token, timeout=30))
    )
    runner.start()
    # Once the first item is written (within a poll of the last one beginning: outcomes are written in groups).
    wait_for(lambda: [item.status for item in item_rows(app, batch["id"])] == ["succeeded", "running"], timeout=15)
    run_sql(app, "UPDATE batches SET dispatch_token = 'newer' WHERE id = :id", id=batch["id"])  # as a re-dispatch would
    gate.open()
    runner.join(timeout=30)
    assert outcome == ["fenced"]
    row = batch_row(app, batch["id"])
    assert (row.status, row.succeeded_items, row.finished_at) == ("in_progress", 1, None)
    assert [item.status for item in item_rows(app, batch["id"])] == ["succeeded", "running"]
    assert not any(line.startswith("item 2/2") or line.startswith("finished") for line in log_lines(app, batch["id"]))


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[dict[str, str]]]]:
    """A local URL for the http processor that records each request's headers."""
    received: list[dict[str, str]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            received.append(dict(self.headers))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/hook", received
    server.shutdown()
    server.server_close()


def test_run_redelivered_after_its_first_attempt_died_redoes_the_interrupted_item_under_the_same_key(
    api: ApiClient,
    app: Flask,
    celery_worker: Any,
    unsent: list[tuple[int, str]],
    monkeypatch: pytest.MonkeyPatch,
    receiver: tuple[str, list[dict[str, str]]],
) -> None:
    url, received = receiver
    monkeypatch.setitem(app.config, "HTTP_PROCESSOR_ALLOWED_HOSTS", ("127.0.0.1",))
    # The state a killed attempt leaves: claimed, item 1 done, item 2 begun, lease gone, message restored.
    profile_ids = api.profiles(3)
    batch = api.batch(profile_ids, "http", url=url, timeout=5)
    [(_, token)] = unsent
    run_sql(app, "UPDATE batches SET run_attempts = 1, succeeded_items = 1 WHERE id = :id", id=batch["id"])
    run_sql(
        app,
        "UPDATE batch_items SET status = 'succeeded', attempts = 1, finished_at = now()"
        " WHERE batch_id = :id AND position = 0",
        id=batch["id"],
    )
    run_sql(
        app,
        "UPDATE batch_items SET status = 'running', attempts = 1, started_at = now()"
        " WHERE batch_id = :id AND position = 1",
        id=batch["id"],
    )

    monkeypatch.setattr(dispatch, "send_run", real_send_run)  # back to the real dispatch
    assert send_and_wait(app, "batches.run", batch["id"], token, task_id=token) == "done"
    row = batch_row(app, batch["id"])
    assert (row.status, row.run_attempts, row.succeeded_items, row.error) == ("done", 2, 3, None)
    assert [(item.status, item.attempts) for item in item_rows(app, batch["id"])] == [
        ("succeeded", 1),
        ("succeeded", 2),
        ("succeeded", 1),
    ]
    # Items run at least once; the receiver can tell the repeat by its stable key.
    assert [(headers["Idempotency-Key"], headers["Batchq-Attempt"]) for headers in received] == [
        (f"batchq-{batch['id']}-{profile_ids[1]}", "2"),
        (f"batchq-{batch['id']}-{profile_ids[2]}", "1"),
    ]
    assert violations(app) == []


def test_lost_run_is_dispatched_again_by_the_reconciler_and_completes(
    api: ApiClient, app: Flask, celery_worker: Any, unsent: list[tuple[int, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    profile_ids = api.profiles(3)
    batch = api.batch(profile_ids, "noop")
    behind = api.batch(profile_ids[:1], "noop", name="behind")
    [(_, lost_token)] = unsent

    # Not lost while its heartbeat is fresh, even though nobody holds its lease.
    with app.app_context():
        assert queue_repairs.recover_lost_run(heartbeat_timeout=30, stop_grace=30) is None
    assert len(unsent) == 1 and batch_row(app, batch["id"]).dispatch_token == lost_token

    age_heartbeat(app, batch["id"])
    monkeypatch.undo()  # from here on, dispatches really go to the worker
    assert send_and_wait(app, "queue.reconcile") is None  # re-dispatched, not promoted: the slot is still held
    wait_for(lambda: batch_status(app, behind["id"]) == "done", timeout=10)

    row = batch_row(app, batch["id"])
    assert (row.status, row.run_attempts, row.error) == ("done", 1, None)
    assert row.dispatch_token != lost_token
    assert [item.attempts for item in item_rows(app, batch["id"])] == [1, 1, 1]
    assert "run lost (no heartbeat); dispatching it again" in log_lines(app, batch["id"])
    assert violations(app) == []


def test_run_lost_max_attempts_times_fails_the_batch_and_the_reconciler_promotes_the_head(
    api: ApiClient, app: Flask, celery_worker: Any, unsent: list[tuple[int, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    profile_ids = api.profiles(2)
    batch = api.batch(profile_ids, "noop")
    behind = api.batch(profile_ids, "noop", name="behind")
    # As if MAX_RUN_ATTEMPTS runs had begun and died, the last one mid-item.
    run_sql(app, "UPDATE batches SET run_attempts = :n WHERE id = :id", n=MAX_RUN_ATTEMPTS, id=batch["id"])
    run_sql(
        app,
        "UPDATE batch_items SET status = 'running', attempts = :n WHERE batch_id = :id AND position = 0",
        n=MAX_RUN_ATTEMPTS,
        id=batch["id"],
    )
    age_heartbeat(app, batch["id"])
    monkeypatch.undo()

    assert send_and_wait(app, "queue.reconcile") == behind["id"]
    row = batch_row(app, batch["id"])
    assert (row.status, row.queue_position) == ("failed", None) and row.finished_at is not None
    assert row.error == f"run lost {MAX_RUN_ATTEMPTS} times (worker died or unreachable)"
    assert [item.status for item in item_rows(app, batch["id"])] == ["pending", "pending"]
    assert log_lines(app, batch["id"])[-1] == f"finished: failed ({row.error})"
    wait_for(lambda: batch_status(app, behind["id"]) == "done", timeout=10)
    assert violations(app) == []


def test_stopping_batch_is_stopped_by_the_first_round_after_the_grace_fallback_ended_its_run(
    api: ApiClient, app: Flask, celery_worker: Any, unsent: list[tuple[int, str]], revoked: list[str], lease: Any
) -> None:
    profile_ids = api.profiles(3)
    batch = api.batch(profile_ids, "sleep", seconds=1)
    behind = api.batch(profile_ids[:1], "noop", name="behind")
    [(_, token)] = unsent
    run = lease(batch["id"])  # a run is under way, on its first item
    run_sql(
        app,
        "UPDATE batch_items SET status = 'running', attempts = 1 WHERE batch_id = :id AND position = 0",
        id=batch["id"],
    )
    assert api.post(f"/batches/{batch['id']}/stop").get_json()["status"] == "stopping"

    with app.app_context():
        queue_repairs.recover_lost_run(heartbeat_timeout=1, stop_grace=30)  # within the grace: wait
        assert revoked == []
    stop_requested_at = batch_row(app, batch["id"]).stop_requested_at
    wait_for(lambda: (utcnow() - stop_requested_at).total_seconds() > 0.01)  # the stop is older than the grace
    with app.app_context():
        queue_repairs.recover_lost_run(heartbeat_timeout=1, stop_grace=0.01)  # past it: hard stop
    assert revoked == [token]
    assert batch_status(app, batch["id"]) == "stopping"
    assert any("terminating its process" in line for line in log_lines(app, batch["id"]))

    run.invalidate()  # the run's process is gone, its lease with it
    wait_for(lambda: lease_free(app, batch["id"]), timeout=15)
    # Its heartbeat is still fresh: nothing is left to wait for all the same.
    assert send_and_wait(app, "queue.reconcile") is None  # stopped; paused, so nothing is promoted
    row = batch_row(app, batch["id"])
    assert (row.status, row.queue_position) == ("stopped", None)
    assert row.error == "killed: did not stop within 0.01s of the stop"
    assert [(item.status, item.attempts) for item in item_rows(app, batch["id"])] == [
        ("pending", 1),
        ("pending", 0),
        ("pending", 0),
    ]
    assert log_lines(app, batch["id"])[-1] == "stopped (3 items left pending)"
    assert batch_row(app, behind["id"]).status == "queued" and api.get("/queue").get_json()["paused"] is True
    assert violations(app) == []


def test_run_that_took_its_lease_just_before_a_stop_ends_the_batch_stopped_itself(
    api: ApiClient, app: Flask, celery_worker: Any, unsent: list[tuple[int, str]], lease: Any
) -> None:
    profile_ids = api.profiles(2)
    batch = api.batch(profile_ids, "noop")
    [(_, token)] = unsent
    run = lease(batch["id"])  # the run has its lease but has not claimed the batch yet
    assert api.post(f"/batches/{batch['id']}/stop").get_json()["status"] == "stopping"
    leases.release(run, batch["id"])  # handed over to the real run task below

    # The same run goes on to claim the batch and finds the stop: it must end it, now.
    assert send_and_wait(app, "batches.run", batch["id"], token, task_id=token) == "stopped"
    row = batch_row(app, batch["id"])
    assert (row.status, row.run_attempts) == ("stopped", 0)
    assert [(item.status, item.attempts) for item in item_rows(app, batch["id"])] == [("pending", 0)] * 2
    assert api.get("/queue").get_json()["paused"] is True
    assert violations(app) == []


def test_promotion_task_does_nothing_when_nothing_is_queued_or_while_paused(
    api: ApiClient, app: Flask, celery_worker: Any
) -> None:
    assert send_and_wait(app, "queue.promote_next") is None
    assert api.get("/batches").get_json()["total"] == 0

    profile_ids = api.profiles(1)
    batch = api.batch(profile_ids, "sleep", seconds=30)
    behind = api.batch(profile_ids, "noop", name="behind")
    assert send_and_wait(app, "queue.promote_next") is None  # the slot is taken
    assert api.post(f"/batches/{batch['id']}/stop").status_code == 200
    wait_for(lambda: batch_status(app, batch["id"]) == "stopped", timeout=15)
    for _ in range(2):
        assert send_and_wait(app, "queue.promote_next") is None  # paused
    sent_tasks.wait_until_run()  # the promotion the stopped run's end chained, too
    assert (batch_row(app, behind["id"]).status, batch_row(app, behind["id"]).queue_position) == ("queued", 1)
    assert batch_row(app, behind["id"]).started_at is None
    assert violations(app) == []


def test_reconciler_promotes_the_head_when_the_promotion_signal_is_lost(
    api: ApiClient, app: Flask, celery_worker: Any, monkeypatch: pytest.MonkeyPatch, gate: Gate
) -> None:
    import workers.signals

    lost: list[str] = []
    monkeypatch.setattr(workers.signals, "_publish", lambda sender, name, args=None: lost.append(name))
    profile_ids = api.profiles(2)
    batch = api.batch(profile_ids, gate.name)
    behind = api.batch(profile_ids, "noop", name="behind")
    gate.open()
    wait_for(lambda: lost, timeout=15)  # the run ended; its promotion went nowhere
    sent_tasks.wait_until_run()  # its task has returned: nothing else is on its way to promote `behind`
    assert batch_status(app, batch["id"]) == "done"
    assert (batch_status(app, behind["id"]), batch_row(app, behind["id"]).queue_position) == ("queued", 1)

    assert send_and_wait(app, "queue.reconcile") == behind["id"]
    wait_for(lambda: batch_status(app, behind["id"]) == "done", timeout=10)
    assert violations(app) == []


def _recover_in_app(app: Flask, call: Any) -> Any:
    with app.app_context():
        return call()


def test_two_reconcilers_and_a_failure_recovery_at_once_dispatch_a_lost_run_exactly_once(
    api: ApiClient, app: Flask, unsent: list[tuple[int, str]], caplog: pytest.LogCaptureFixture
) -> None:
    profile_ids = api.profiles(2)
    batch = api.batch(profile_ids, "noop")
    behind = api.batch(profile_ids, "noop", name="behind")
    [(_, lost_token)] = unsent
    age_heartbeat(app, batch["id"])  # its run never began: no lease, no heartbeat
    caplog.set_level(logging.WARNING, logger="app.services.queue_repairs")  # the session's worker sets ERROR

    recoveries = [
        lambda: queue_repairs.recover_lost_run(heartbeat_timeout=1, stop_grace=30),
        lambda: queue_repairs.recover_lost_run(heartbeat_timeout=1, stop_grace=30),
        lambda: queue_repairs.recover_dead_run(batch["id"], lost_token),
    ]
    for _ in range(3):  # three rounds: the serialization must hold every time, not by luck
        results = run_in_threads(len(recoveries), lambda index: _recover_in_app(app, recoveries[index]))
        assert results == [None, None, None]  # the slot stays taken: nobody promotes `behind`
        lost_token = batch_row(app, batch["id"]).dispatch_token
        age_heartbeat(app, batch["id"])
    assert len(unsent) == 1 + 3  # the first dispatch, then exactly one per round
    assert len({token for _, token in unsent}) == 4
    assert (
        log_lines(app, batch["id"]).count("run lost (no heartbeat); dispatching it again")
        + log_lines(app, batch["id"]).count("run lost (its run task failed); dispatching it again")
        == 3
    )
    assert (batch_status(app, behind["id"]), batch_row(app, behind["id"]).queue_position) == ("queued", 1)
    repairs = [r.getMessage() for r in caplog.records if "dispatching it again" in r.getMessage()]
    assert len(repairs) == 3 and all(message.startswith(f"batch {batch['id']}: run lost") for message in repairs)
    assert violations(app) == []


def test_failure_recovery_leaves_a_run_alone_when_its_lease_is_held_or_its_token_is_old(
    api: ApiClient, app: Flask, unsent: list[tuple[int, str]], lease: Any
) -> None:
    profile_ids = api.profiles(2)
    batch = api.batch(profile_ids, "noop")
    [(_, token)] = unsent
    held = lease(batch["id"])
    with app.app_context(), pytest.raises(LeaseStillHeld):
        queue_repairs.recover_dead_run(batch["id"], token)  # held: its process is dying, ask again shortly
    assert batch_row(app, batch["id"]).dispatch_token == token
    held.invalidate()
    wait_for(lambda: lease_free(app, batch["id"]), timeout=15)
    with app.app_context():
        assert queue_repairs.recover_dead_run(batch["id"], "an-older-token") is None  # not this dispatch
    assert len(unsent) == 1 and batch_row(app, batch["id"]).dispatch_token == token

    with app.app_context():
        queue_repairs.recover_dead_run(batch["id"], token)
    assert len(unsent) == 2 and batch_row(app, batch["id"]).dispatch_token == unsent[1][1] != token
    assert violations(app) == []


def test_queue_reconcile_command_dispatches_a_lost_run_and_says_what_runs(
    api: ApiClient, app: Flask, unsent: list[tuple[int, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    batch = api.batch(api.profiles(1), "noop")
    age_heartbeat(app, batch["id"])
    monkeypatch.setitem(app.config, "BATCH_HEARTBEAT_TIMEOUT", 1.0)
    result = app.test_cli_runner().invoke(args=["queue", "reconcile"])
    assert result.exit_code == 0, result.output
    assert result.output == f"Batch {batch['id']} is in_progress; see its log for any repair.\n"
    assert len(unsent) == 2 and "run lost (no heartbeat); dispatching it again" in log_lines(app, batch["id"])
