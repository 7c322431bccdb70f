"""A real prefork worker, killed or stopped mid-batch: the queue recovers on its own."""

from __future__ import annotations

import json
import os
import re
import signal
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from flask import Flask

from app.models._types import utcnow
from app.services import queue_repairs
from tests.brokers import amqp_session
from tests.conftest import ApiClient, wait_for
from tests.faults.conftest import WorkerProcess
from tests.faults.helpers import (
    batch_row,
    batch_status,
    enqueue,
    heartbeat_older_than,
    item_rows,
    lease_free,
    log_lines,
    violations,
)
from tests.metrics.scrapes import samples, value

pytestmark = [pytest.mark.faults, pytest.mark.usefixtures("settled")]


def test_worker_killed_mid_batch_is_recovered_by_the_reconciler_and_items_resume_not_rerun(
    api: ApiClient, app: Flask, prefork_worker: WorkerProcess
) -> None:
    sender: Celery = prefork_worker.sender
    prefork_worker.start()
    profile_ids = api.profiles(6)
    # Item 3 holds its first attempt until the worker dies: killed surely mid-item, however slow the machine.
    batch_id = enqueue(app, profile_ids, "hang", hang_profiles=["p-2"], first_attempt_only=True)
    # Killed once the items before it are written (their group is, within a poll of the item in hand
    # beginning): a written item is never run again. Items whose outcomes were not written yet run
    # again: test_pool_child_killed_mid_group_runs_again_only_the_items_whose_outcomes_were_not_written.
    wait_for(
        lambda: [item.status for item in item_rows(app, batch_id)[:3]] == ["succeeded", "succeeded", "running"],
        timeout=15,
    )
    done_before = [(item.attempts, item.finished_at) for item in item_rows(app, batch_id)[:2]]
    first_token = batch_row(app, batch_id).dispatch_token

    prefork_worker.kill()
    wait_for(lambda: lease_free(app, batch_id), timeout=15)  # the dead run's lease went with it
    assert batch_status(app, batch_id) == "in_progress"
    prefork_worker.start()
    wait_for(lambda: heartbeat_older_than(app, batch_id, 2.2), timeout=15)

    reconciled = sender.send_task(
        "queue.reconcile", queue="control", ignore_result=False
    )  # the new worker's reconciler
    assert reconciled.get(timeout=10) is None
    wait_for(lambda: batch_status(app, batch_id) == "done", timeout=15)
    row = batch_row(app, batch_id)
    items = item_rows(app, batch_id)
    assert [(item.attempts, item.finished_at) for item in items[:2]] == done_before  # not rerun
    assert [item.attempts for item in items] == [1, 1, 2, 1, 1, 1]  # the interrupted one resumed
    logs = log_lines(app, batch_id)
    if amqp_session():
        # RabbitMQ gives a dead connection's unacknowledged message back at once: the new worker
        # resumes the same dispatch before any repair round could find the run lost.
        assert row.run_attempts == 2 and row.dispatch_token == first_token and row.succeeded_items == 6
    else:
        # Redis keeps it until its visibility timeout (hours): the reconciler dispatches the batch anew.
        assert row.run_attempts == 2 and row.dispatch_token != first_token and row.succeeded_items == 6
        # The new worker has another name: its round may already know the old one is gone, or see the heartbeat aged.
        assert {
            "run lost (no heartbeat); dispatching it again",
            "run lost (its worker is gone); dispatching it again",
        } & set(logs)
    assert any(line.startswith("run began") and line.endswith("(attempt 2)") for line in logs)
    assert violations(app) == []

    # The same worker, a processor that ignores the stop: the reconciler's hard stop ends it.
    stubborn = enqueue(app, profile_ids[:2], "stubborn", seconds=30)
    wait_for(lambda: item_rows(app, stubborn)[0].status == "running", timeout=15)
    assert api.post(f"/batches/{stubborn}/stop").get_json()["status"] == "stopping"
    # The run's watcher writes a heartbeat and then looks for a stop, every second here: a heartbeat
    # a second past the stop means it saw the stop a round ago. A processor that looks would have
    # let go by then; this one did not notice.
    stop_requested_at = batch_row(app, stubborn).stop_requested_at
    wait_for(lambda: (batch_row(app, stubborn).heartbeat_at - stop_requested_at).total_seconds() > 1.0, timeout=15)
    assert batch_status(app, stubborn) == "stopping"
    wait_for(lambda: (utcnow() - stop_requested_at).total_seconds() > 0.3)  # the stop is older than the grace
    with app.app_context():
        queue_repairs.recover_lost_run(heartbeat_timeout=2, stop_grace=0.3)
    wait_for(lambda: lease_free(app, stubborn), timeout=15)  # its process was terminated
    wait_for(lambda: heartbeat_older_than(app, stubborn, 2.2), timeout=15)
    assert sender.send_task("queue.reconcile", queue="control", ignore_result=False).get(timeout=10) is None
    assert batch_status(app, stubborn) == "stopped"
    assert [(item.status, item.attempts) for item in item_rows(app, stubborn)] == [("pending", 1), ("pending", 0)]
    assert any("terminating its process" in line for line in log_lines(app, stubborn))
    assert batch_row(app, stubborn).error == "killed: did not stop within 0.3s of the stop"
    assert api.get("/queue").get_json()["paused"] is True
    assert violations(app) == []


@pytest.mark.parametrize("whole_group", [True, False], ids=["process-group", "main-process"])
def test_sigterm_to_the_worker_lets_the_item_finish_and_the_batch_resumes_after_restart(
    api: ApiClient, app: Flask, prefork_worker: WorkerProcess, whole_group: bool
) -> None:
    prefork_worker.start()
    profile_ids = api.profiles(4)
    # Item 2 is under way until the SIGTERM reaches its pool process, then finishes.
    batch_id = enqueue(app, profile_ids, "until_shutdown", hold_profiles=["p-1"])
    behind = enqueue(app, profile_ids[:1], "noop")
    wait_for(lambda: item_rows(app, batch_id)[1].status == "running", timeout=15)
    token = batch_row(app, batch_id).dispatch_token

    # SIGTERM reaches the main process and the pool child at once (honcho, systemd), or the main one only.
    assert prefork_worker.terminate(whole_group) < 10, prefork_worker.log()
    statuses = [item.status for item in item_rows(app, batch_id)]
    assert statuses == ["succeeded", "succeeded", "pending", "pending"], (
        log_lines(app, batch_id),
        prefork_worker.log(),
    )
    assert batch_status(app, batch_id) == "in_progress" and lease_free(app, batch_id)
    assert any("handed back" in line for line in log_lines(app, batch_id))

    prefork_worker.start()  # no reconciler runs here: the handed-back message alone resumes it
    wait_for(lambda: batch_status(app, behind) == "done", timeout=30)
    row = batch_row(app, batch_id)
    assert (row.status, row.dispatch_token, row.run_attempts) == ("done", token, 2)
    assert [item.attempts for item in item_rows(app, batch_id)] == [1, 1, 1, 1]  # nothing ran twice
    assert violations(app) == []


def test_pool_child_killed_mid_batch_is_dispatched_again_at_once_without_waiting_for_the_heartbeat(
    api: ApiClient, app: Flask, prefork_worker: WorkerProcess
) -> None:
    prefork_worker.env["BATCH_HEARTBEAT_TIMEOUT"] = "600"  # recovery must not come from the heartbeat
    prefork_worker.start()
    profile_ids = api.profiles(4)
    # Item 2 holds its first attempt until its pool process is killed; the run dispatched again gets through.
    batch_id = enqueue(app, profile_ids, "hang", hang_profiles=["p-1"], first_attempt_only=True)
    behind = enqueue(app, profile_ids[:1], "noop")
    wait_for(lambda: item_rows(app, batch_id)[1].status == "running", timeout=15)
    first_token = batch_row(app, batch_id).dispatch_token
    child = prefork_worker.pool_child_running(first_token)

    os.kill(child, signal.SIGKILL)
    finished = [(item.id, item.finished_at) for item in item_rows(app, batch_id) if item.status == "succeeded"]
    wait_for(lambda: batch_status(app, behind) == "done", timeout=30)
    row = batch_row(app, batch_id)
    assert (row.status, row.run_attempts) == ("done", 2) and row.dispatch_token != first_token
    items = item_rows(app, batch_id)
    assert sorted(item.attempts for item in items) == [1, 1, 1, 2]  # only the interrupted one ran again
    assert [(item.id, item.finished_at) for item in items if item.status == "succeeded"][: len(finished)] == finished
    assert "run lost (its run task failed); dispatching it again" in log_lines(app, batch_id)
    assert prefork_worker.process is not None and prefork_worker.process.poll() is None  # the worker lives on
    assert violations(app) == []


def test_pool_child_killed_mid_group_runs_again_only_the_items_whose_outcomes_were_not_written(
    api: ApiClient, app: Flask, prefork_worker: WorkerProcess, tmp_path: Path
) -> None:
    prefork_worker.start()
    count, die_on = 60, 40
    written_to = tmp_path / "written.json"
    batch_id = enqueue(app, api.profiles(count), "die_at", die_profile=f"p-{die_on}", written_to=str(written_to))

    wait_for(lambda: batch_status(app, batch_id) == "done", timeout=60)
    written = set(json.loads(written_to.read_text()))  # succeeded and written when the process died
    items = item_rows(app, batch_id)
    assert all(item.status == "succeeded" for item in items)
    # Written as succeeded: never ran again. Ran but not written yet (the group in hand) and the
    # item that died: ran again, each once more. The rest ran once, in the run dispatched again.
    before = items[:die_on]
    assert [item.attempts for item in before] == [1 if item.id in written else 2 for item in before]
    assert [item.attempts for item in items[die_on:]] == [2] + [1] * (count - die_on - 1)
    assert written <= {item.id for item in before}
    assert row_counts(batch_row(app, batch_id)) == (count, 0)
    assert violations(app) == []


def row_counts(row: Any) -> tuple[int, int]:
    return row.succeeded_items, row.failed_items


def _process_ended(pid: int) -> bool:
    """Whether the process is gone or dead and waiting to be reaped by its parent (a zombie)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def test_a_processor_that_ignores_its_time_limit_has_its_pool_process_ended_and_the_batch_goes_on(
    api: ApiClient, app: Flask, prefork_worker: WorkerProcess
) -> None:
    prefork_worker.env["BATCH_HEARTBEAT_TIMEOUT"] = "600"  # the restart must not come from the heartbeat
    prefork_worker.start()
    metrics_before = samples(app.test_client().get("/metrics").text)  # the worker writes to the session's METRICS_DIR
    profile_ids = api.profiles(3)
    batch_id = enqueue(app, profile_ids, "hang", item_timeout=1, hang_profiles=["p-1"])
    behind = enqueue(app, profile_ids[:1], "noop")
    wait_for(lambda: item_rows(app, batch_id)[1].status == "running", timeout=15)
    first_token = batch_row(app, batch_id).dispatch_token
    child = prefork_worker.pool_child_running(first_token)

    # One second of limit and three of grace, then the watcher restarts the run and ends its process.
    wait_for(lambda: batch_status(app, behind) == "done", timeout=30)
    row = batch_row(app, batch_id)
    assert (row.status, row.error, row.failed_items, row.succeeded_items) == ("failed", "1 of 3 items failed", 1, 2)
    # A deliberate restart, not a lost run: the second run's claim counts as the first attempt again.
    assert row.run_attempts == 1 and row.dispatch_token != first_token
    items = item_rows(app, batch_id)
    assert [(item.status, item.attempts) for item in items] == [("succeeded", 1), ("failed", 1), ("succeeded", 1)]
    assert items[1].error == "timed out after 1 s (the processor ignored the limit; its process was ended)"
    # Not before the limit and its grace; well before the heartbeat timeout (600 s), whatever the load.
    assert 4 <= (items[1].finished_at - items[1].started_at).total_seconds() < 30
    wait_for(lambda: _process_ended(child), timeout=15)
    assert prefork_worker.process is not None and prefork_worker.process.poll() is None  # the worker lives on
    assert "ending its pool process" in prefork_worker.log()
    logs = log_lines(app, batch_id)
    assert f"item 2/3 (p-1) failed: {items[1].error}" in logs
    assert sum(line.startswith("run began") for line in logs) == 2 and not any("(attempt" in line for line in logs)

    # Celery reports the child lost, and its task_failure sends queue.recover_run with the old token,
    # which finds a newer one and leaves the batch alone.
    wait_for(lambda: re.search(r"Task queue\.recover_run\[\S+\] succeeded", prefork_worker.log()), timeout=20)
    assert "WorkerLostError" in prefork_worker.log()
    assert batch_row(app, batch_id) == row and log_lines(app, batch_id) == logs
    assert not any(line.startswith("run lost") for line in logs)
    assert violations(app) == []
    # The stalled item counts as failed (from the killed pool process's metrics file), and as a repair.
    metrics_after = samples(app.test_client().get("/metrics").text)

    def counted(name: str, **labels: str) -> float:
        return value(metrics_after, name, **labels) - value(metrics_before, name, **labels)

    assert counted("batchq_items_total", processor="hang", outcome="failed") == 1
    assert counted("batchq_items_total", processor="hang", outcome="succeeded") == 2
    assert counted("batchq_repairs_total", kind="stalled_run_restarted") == 1
