"""Faults: duplicate and stale deliveries, lost runs, lost signals, a worker killed mid-batch."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery
from flask import Flask
from sqlalchemy import Connection

from app.config import Settings
from app.extensions import db
from app.models import Batch
from app.services import dispatch, leases
from app.services.queue_manager import MAX_RUN_ATTEMPTS, NewBatch, queue_manager
from tests.conftest import SESSION_TAG, ApiClient, held_leases, queue_violations, wait_for

pytestmark = pytest.mark.usefixtures("settled")

ROOT = Path(__file__).resolve().parents[2]


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


def _row(app: Flask, batch_id: int) -> Any:
    with app.app_context():
        row = db.session.execute(
            db.select(Batch.__table__, Batch.queue_position.label("queue_position")).where(Batch.id == batch_id)
        ).one()
        db.session.rollback()
        return row


def _items(app: Flask, batch_id: int) -> list[Any]:
    with app.app_context():
        rows = db.session.execute(
            db.text("SELECT * FROM batch_items WHERE batch_id = :id ORDER BY position"), {"id": batch_id}
        ).all()
        db.session.rollback()
        return rows


def _logs(app: Flask, batch_id: int) -> list[str]:
    with app.app_context():
        lines = (
            db.session.execute(
                db.text("SELECT message FROM batch_logs WHERE batch_id = :id ORDER BY id"), {"id": batch_id}
            )
            .scalars()
            .all()
        )
        db.session.rollback()
        return list(lines)


def _sql(app: Flask, statement: str, **params: Any) -> None:
    with app.app_context():
        db.session.execute(db.text(statement), params)
        db.session.commit()


def _age_heartbeat(app: Flask, batch_id: int) -> None:
    """Make the batch's last sign of life an hour old."""
    _sql(app, "UPDATE batches SET heartbeat_at = now() - interval '1 hour' WHERE id = :id", id=batch_id)


def _violations(app: Flask) -> list[str]:
    with app.app_context():
        return queue_violations()


def _send(app: Flask, name: str, *args: Any, task_id: str | None = None, timeout: float = 10) -> Any:
    queue = "batches" if name == "batches.run" else "control"
    celery = app.extensions["celery"]
    if task_id is not None:  # a redelivery reuses its id: don't read an earlier delivery's result
        celery.AsyncResult(task_id).forget()
    result = celery.send_task(name, args=list(args), task_id=task_id, queue=queue, ignore_result=False)
    return result.get(timeout=timeout)


def _status(app: Flask, batch_id: int) -> str:
    return _row(app, batch_id).status


def test_run_delivered_twice_while_running_returns_duplicate_and_runs_each_item_once(
    api: ApiClient, app: Flask, celery_worker: Any
) -> None:
    profile_ids = api.profiles(4)
    batch = api.batch(profile_ids, "sleep", seconds=0.25)
    behind = api.batch(profile_ids[:1], "noop", name="behind")
    wait_for(lambda: _items(app, batch["id"])[0].status == "running", timeout=5)
    token = _row(app, batch["id"]).dispatch_token

    assert _send(app, "batches.run", batch["id"], token, task_id=token) == "duplicate"
    assert _status(app, behind["id"]) == "queued"  # the duplicate's end promoted nothing

    wait_for(lambda: _status(app, behind["id"]) == "done", timeout=10)
    row = _row(app, batch["id"])
    assert (row.status, row.run_attempts, row.succeeded_items) == ("done", 1, 4)
    assert [item.attempts for item in _items(app, batch["id"])] == [1, 1, 1, 1]
    assert sum(line.startswith("run began") for line in _logs(app, batch["id"])) == 1
    assert row.finished_at <= _row(app, behind["id"]).started_at
    assert _violations(app) == []


def test_run_with_a_stale_token_returns_stale_and_writes_nothing(
    api: ApiClient, app: Flask, celery_worker: Any, unsent: list[tuple[int, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    profile_ids = api.profiles(3)
    batch = api.batch(profile_ids, "noop")
    [(_, old_token)] = unsent
    _age_heartbeat(app, batch["id"])
    with app.app_context():
        queue_manager.recover_lost_run(heartbeat_timeout=1, stop_grace=30)
    [_, (_, new_token)] = unsent
    assert new_token != old_token
    before = (_row(app, batch["id"]), _items(app, batch["id"]), _logs(app, batch["id"]))

    assert _send(app, "batches.run", batch["id"], old_token, task_id=old_token) == "stale"
    assert (_row(app, batch["id"]), _items(app, batch["id"]), _logs(app, batch["id"])) == before

    monkeypatch.undo()
    assert _send(app, "batches.run", batch["id"], new_token, task_id=new_token) == "done"
    assert [item.attempts for item in _items(app, batch["id"])] == [1, 1, 1]
    assert _row(app, batch["id"]).run_attempts == 1
    # A late redelivery after the end is stale too, and changes nothing.
    after = (_row(app, batch["id"]), _items(app, batch["id"]), _logs(app, batch["id"]))
    assert _send(app, "batches.run", batch["id"], new_token, task_id=new_token) == "stale"
    assert (_row(app, batch["id"]), _items(app, batch["id"]), _logs(app, batch["id"])) == after
    assert _violations(app) == []


def test_run_replaced_during_its_last_item_writes_neither_that_item_nor_the_end(
    api: ApiClient, app: Flask, celery_worker: Any, unsent: list[tuple[int, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The last item's outcome is written with the batch's end: both must be fenced together.
    profile_ids = api.profiles(2)
    batch = api.batch(profile_ids, "sleep", seconds=0.6)
    [(_, token)] = unsent
    monkeypatch.undo()
    outcome: list[Any] = []
    runner = threading.Thread(
        target=lambda: outcome.append(_send(app, "batches.run", batch["id"], token, task_id=token))
    )
    runner.start()
    wait_for(lambda: _items(app, batch["id"])[1].status == "running", timeout=5)
    _sql(app, "UPDATE batches SET dispatch_token = 'newer' WHERE id = :id", id=batch["id"])  # as a re-dispatch would
    runner.join(timeout=10)
    assert outcome == ["fenced"]
    row = _row(app, batch["id"])
    assert (row.status, row.succeeded_items, row.finished_at) == ("in_progress", 1, None)
    assert [item.status for item in _items(app, batch["id"])] == ["succeeded", "running"]
    assert not any(line.startswith("item 2/2") or line.startswith("finished") for line in _logs(app, batch["id"]))


def test_run_redelivered_after_its_first_attempt_died_redoes_the_interrupted_item(
    api: ApiClient, app: Flask, celery_worker: Any, unsent: list[tuple[int, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The state a killed attempt leaves: claimed, item 1 done, item 2 begun, lease gone, message restored.
    profile_ids = api.profiles(3)
    batch = api.batch(profile_ids, "noop")
    [(_, token)] = unsent
    _sql(app, "UPDATE batches SET run_attempts = 1, succeeded_items = 1 WHERE id = :id", id=batch["id"])
    _sql(
        app,
        "UPDATE batch_items SET status = 'succeeded', attempts = 1, finished_at = now()"
        " WHERE batch_id = :id AND position = 0",
        id=batch["id"],
    )
    _sql(
        app,
        "UPDATE batch_items SET status = 'running', attempts = 1, started_at = now()"
        " WHERE batch_id = :id AND position = 1",
        id=batch["id"],
    )

    monkeypatch.undo()
    assert _send(app, "batches.run", batch["id"], token, task_id=token) == "done"
    row = _row(app, batch["id"])
    assert (row.status, row.run_attempts, row.succeeded_items, row.error) == ("done", 2, 3, None)
    assert [(item.status, item.attempts) for item in _items(app, batch["id"])] == [
        ("succeeded", 1),
        ("succeeded", 2),
        ("succeeded", 1),
    ]
    assert _violations(app) == []


def test_lost_run_is_dispatched_again_by_the_reconciler_and_completes(
    api: ApiClient, app: Flask, celery_worker: Any, unsent: list[tuple[int, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    profile_ids = api.profiles(3)
    batch = api.batch(profile_ids, "noop")
    behind = api.batch(profile_ids[:1], "noop", name="behind")
    [(_, lost_token)] = unsent

    # Not lost while its heartbeat is fresh, even though nobody holds its lease.
    with app.app_context():
        assert queue_manager.recover_lost_run(heartbeat_timeout=30, stop_grace=30) is None
    assert len(unsent) == 1 and _row(app, batch["id"]).dispatch_token == lost_token

    _age_heartbeat(app, batch["id"])
    monkeypatch.undo()  # from here on, dispatches really go to the worker
    assert _send(app, "queue.reconcile") is None  # re-dispatched, not promoted: the slot is still held
    wait_for(lambda: _status(app, behind["id"]) == "done", timeout=10)

    row = _row(app, batch["id"])
    assert (row.status, row.run_attempts, row.error) == ("done", 1, None)
    assert row.dispatch_token != lost_token
    assert [item.attempts for item in _items(app, batch["id"])] == [1, 1, 1]
    assert "run lost (no heartbeat); dispatching it again" in _logs(app, batch["id"])
    assert _violations(app) == []


def test_run_lost_max_attempts_times_fails_the_batch_and_the_reconciler_promotes_the_head(
    api: ApiClient, app: Flask, celery_worker: Any, unsent: list[tuple[int, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    profile_ids = api.profiles(2)
    batch = api.batch(profile_ids, "noop")
    behind = api.batch(profile_ids, "noop", name="behind")
    # As if MAX_RUN_ATTEMPTS runs had begun and died, the last one mid-item.
    _sql(app, "UPDATE batches SET run_attempts = :n WHERE id = :id", n=MAX_RUN_ATTEMPTS, id=batch["id"])
    _sql(
        app,
        "UPDATE batch_items SET status = 'running', attempts = :n WHERE batch_id = :id AND position = 0",
        n=MAX_RUN_ATTEMPTS,
        id=batch["id"],
    )
    _age_heartbeat(app, batch["id"])
    monkeypatch.undo()

    assert _send(app, "queue.reconcile") == behind["id"]
    row = _row(app, batch["id"])
    assert (row.status, row.queue_position) == ("failed", None) and row.finished_at is not None
    assert row.error == f"run lost {MAX_RUN_ATTEMPTS} times (worker died or unreachable)"
    assert [item.status for item in _items(app, batch["id"])] == ["pending", "pending"]
    assert _logs(app, batch["id"])[-1] == f"finished: failed ({row.error})"
    wait_for(lambda: _status(app, behind["id"]) == "done", timeout=10)
    assert _violations(app) == []


def test_stopping_batch_whose_run_is_gone_is_stopped_by_the_reconciler_after_the_grace_fallback(
    api: ApiClient, app: Flask, celery_worker: Any, unsent: list[tuple[int, str]], revoked: list[str], lease: Any
) -> None:
    profile_ids = api.profiles(3)
    batch = api.batch(profile_ids, "sleep", seconds=1)
    behind = api.batch(profile_ids[:1], "noop", name="behind")
    [(_, token)] = unsent
    run = lease(batch["id"])  # a run is under way, on its first item
    _sql(
        app,
        "UPDATE batch_items SET status = 'running', attempts = 1 WHERE batch_id = :id AND position = 0",
        id=batch["id"],
    )
    assert api.post(f"/batches/{batch['id']}/stop").get_json()["status"] == "stopping"

    with app.app_context():
        queue_manager.recover_lost_run(heartbeat_timeout=1, stop_grace=30)  # within the grace: wait
        assert revoked == []
        time.sleep(0.05)
        queue_manager.recover_lost_run(heartbeat_timeout=1, stop_grace=0.01)  # past it: hard stop
    assert revoked == [token]
    assert _status(app, batch["id"]) == "stopping"
    assert any("terminating its process" in line for line in _logs(app, batch["id"]))

    run.invalidate()  # the run's process is gone, its lease with it
    wait_for(lambda: _lease_free(app, batch["id"]), timeout=2)
    _age_heartbeat(app, batch["id"])
    assert _send(app, "queue.reconcile") is None  # stopped; paused, so nothing is promoted
    row = _row(app, batch["id"])
    assert (row.status, row.queue_position) == ("stopped", None)
    assert row.error == "killed: did not stop within 0.01s of the stop"
    assert [(item.status, item.attempts) for item in _items(app, batch["id"])] == [
        ("pending", 1),
        ("pending", 0),
        ("pending", 0),
    ]
    assert _logs(app, batch["id"])[-1] == "stopped (3 items left pending)"
    assert _row(app, behind["id"]).status == "queued" and api.get("/queue").get_json()["paused"] is True
    assert _violations(app) == []


def _lease_free(app: Flask, batch_id: int) -> bool:
    with app.app_context():
        return batch_id not in held_leases()


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
    assert _send(app, "batches.run", batch["id"], token, task_id=token) == "stopped"
    row = _row(app, batch["id"])
    assert (row.status, row.run_attempts) == ("stopped", 0)
    assert [(item.status, item.attempts) for item in _items(app, batch["id"])] == [("pending", 0)] * 2
    assert api.get("/queue").get_json()["paused"] is True
    assert _violations(app) == []


def test_promotion_task_does_nothing_when_nothing_is_queued_or_while_paused(
    api: ApiClient, app: Flask, celery_worker: Any
) -> None:
    assert _send(app, "queue.promote_next") is None
    assert api.get("/batches").get_json()["total"] == 0

    profile_ids = api.profiles(1)
    batch = api.batch(profile_ids, "sleep", seconds=30)
    behind = api.batch(profile_ids, "noop", name="behind")
    assert _send(app, "queue.promote_next") is None  # the slot is taken
    assert api.post(f"/batches/{batch['id']}/stop").status_code == 200
    wait_for(lambda: _status(app, batch["id"]) == "stopped", timeout=3)
    for _ in range(2):
        assert _send(app, "queue.promote_next") is None  # paused
    assert (_row(app, behind["id"]).status, _row(app, behind["id"]).queue_position) == ("queued", 1)
    assert _row(app, behind["id"]).started_at is None
    assert _violations(app) == []


def test_reconciler_promotes_the_head_when_the_promotion_signal_is_lost(
    api: ApiClient, app: Flask, celery_worker: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import workers.signals

    lost: list[str] = []
    monkeypatch.setattr(workers.signals, "_publish_promotion", lambda sender: lost.append(sender.name))
    profile_ids = api.profiles(2)
    batch = api.batch(profile_ids, "sleep", seconds=0.1)
    behind = api.batch(profile_ids, "noop", name="behind")
    wait_for(lambda: lost, timeout=10)  # the run ended; its promotion went nowhere
    assert _status(app, batch["id"]) == "done"
    time.sleep(0.3)
    assert (_status(app, behind["id"]), _row(app, behind["id"]).queue_position) == ("queued", 1)

    assert _send(app, "queue.reconcile") == behind["id"]
    wait_for(lambda: _status(app, behind["id"]) == "done", timeout=10)
    assert _violations(app) == []


# --- a real prefork worker, killed ---------------------------------------------


class WorkerProcess:
    """A `celery worker` subprocess (prefork) on keys of its own, killed like a lost machine."""

    def __init__(self, settings: Settings, prefix: str, log_dir: Path) -> None:
        self.env = {
            **os.environ,
            "DATABASE_URL": settings.database_url,
            "REDIS_URL": settings.redis_url,
            "SECRET_KEY": "test-secret",
            "BATCHQ_EVENTS_CHANNEL": settings.events_channel,
            "BATCH_HEARTBEAT_TIMEOUT": "2",
            "PROCESSOR_MODULES": "tests.faults.stubborn",
            "BATCHQ_TEST_KEYPREFIX": prefix,
            "PYTHONPATH": str(ROOT),
        }
        self.log_dir = log_dir
        self.process: subprocess.Popen[bytes] | None = None
        self.started = 0

    def start(self, sender: Celery) -> None:
        self.started += 1
        name = f"faults{self.started}-{SESSION_TAG}@%h"
        log = (self.log_dir / f"worker{self.started}.log").open("wb")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "tests.faults.worker_app:celery_app",
                "worker",
                "-P",
                "prefork",
                "-c",
                "2",
                "-Q",
                "batches,control",
                "-n",
                name,
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "-l",
                "INFO",
            ],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_for(lambda: self._answers(sender, name.replace("%h", "")), timeout=20, interval=0.1)

    def _answers(self, sender: Celery, prefix: str) -> bool:
        assert self.process is not None and self.process.poll() is None, self.log()
        replies = sender.control.ping(timeout=0.3) or []
        return any(name.startswith(prefix) for reply in replies for name in reply)

    def kill(self) -> None:
        """SIGKILL the whole process group: the main process and its pool children at once."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def log(self) -> str:
        return "\n".join(path.read_text(errors="replace")[-3000:] for path in sorted(self.log_dir.glob("*.log")))


@pytest.fixture
def prefork_worker(
    app: Flask, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[WorkerProcess]:
    """A prefork worker subprocess, with this process's dispatches routed to it (and only to it)."""
    prefix = f"batchq-{SESSION_TAG}-faults-{uuid.uuid4().hex[:6]}:"
    sender = Celery("faults", set_as_current=False)
    sender.config_from_object("celeryconfig")
    sender.conf.update(
        broker_url=settings.broker_url,
        result_backend=settings.redis_url,
        broker_transport_options={**sender.conf.broker_transport_options, "global_keyprefix": prefix},
        result_backend_transport_options={
            **sender.conf.result_backend_transport_options,
            "global_keyprefix": prefix,
        },
    )
    monkeypatch.setattr(dispatch, "celery", lambda: sender)
    worker = WorkerProcess(settings, prefix, tmp_path)
    worker.sender = sender  # type: ignore[attr-defined]
    try:
        yield worker
    finally:
        worker.kill()
        client = redis.Redis.from_url(settings.redis_url)
        keys = list(client.scan_iter(match=f"{prefix}*"))
        if keys:
            client.delete(*keys)
        sender.close()


def _heartbeat_older_than(app: Flask, batch_id: int, seconds: float) -> bool:
    with app.app_context():
        old = db.session.scalar(
            db.text("SELECT now() - heartbeat_at > make_interval(secs => :s) FROM batches WHERE id = :id"),
            {"id": batch_id, "s": seconds},
        )
        db.session.rollback()
        return bool(old)


def _enqueue(app: Flask, profile_ids: list[int], processor: str, **parameters: Any) -> int:
    with app.app_context():
        batch, _ = queue_manager.enqueue(
            NewBatch(
                name=processor, processor=processor, parameters=parameters, profile_ids=profile_ids, created_by="test"
            )
        )
        return batch.id


def test_worker_killed_mid_batch_is_recovered_by_the_reconciler_and_items_resume_not_rerun(
    api: ApiClient, app: Flask, prefork_worker: WorkerProcess
) -> None:
    sender: Celery = prefork_worker.sender  # type: ignore[attr-defined]
    prefork_worker.start(sender)
    profile_ids = api.profiles(6)
    batch_id = _enqueue(app, profile_ids, "sleep", seconds=0.4)
    wait_for(lambda: _items(app, batch_id)[2].status == "running", timeout=15)
    done_before = [(item.attempts, item.finished_at) for item in _items(app, batch_id)[:2]]
    first_token = _row(app, batch_id).dispatch_token

    prefork_worker.kill()
    wait_for(lambda: _lease_free(app, batch_id), timeout=3)  # the dead run's lease went with it
    assert _status(app, batch_id) == "in_progress"
    prefork_worker.start(sender)
    wait_for(lambda: _heartbeat_older_than(app, batch_id, 2.2), timeout=5)

    reconciled = sender.send_task(
        "queue.reconcile", queue="control", ignore_result=False
    )  # the new worker's reconciler
    assert reconciled.get(timeout=10) is None
    wait_for(lambda: _status(app, batch_id) == "done", timeout=15)
    row = _row(app, batch_id)
    assert row.run_attempts == 2 and row.dispatch_token != first_token and row.succeeded_items == 6
    items = _items(app, batch_id)
    assert [(item.attempts, item.finished_at) for item in items[:2]] == done_before  # not rerun
    assert [item.attempts for item in items] == [1, 1, 2, 1, 1, 1]  # the interrupted one resumed
    logs = _logs(app, batch_id)
    assert "run lost (no heartbeat); dispatching it again" in logs
    assert any(line.startswith("run began") and line.endswith("(attempt 2)") for line in logs)
    assert _violations(app) == []

    # The same worker, a processor that ignores the stop: the reconciler's hard stop ends it.
    stubborn = _enqueue(app, profile_ids[:2], "stubborn", seconds=30)
    wait_for(lambda: _items(app, stubborn)[0].status == "running", timeout=10)
    assert api.post(f"/batches/{stubborn}/stop").get_json()["status"] == "stopping"
    time.sleep(0.5)
    assert _status(app, stubborn) == "stopping"  # it did not notice
    with app.app_context():
        queue_manager.recover_lost_run(heartbeat_timeout=2, stop_grace=0.3)
    wait_for(lambda: _lease_free(app, stubborn), timeout=5)  # its process was terminated
    wait_for(lambda: _heartbeat_older_than(app, stubborn, 2.2), timeout=5)
    assert sender.send_task("queue.reconcile", queue="control", ignore_result=False).get(timeout=10) is None
    assert _status(app, stubborn) == "stopped"
    assert [(item.status, item.attempts) for item in _items(app, stubborn)] == [("pending", 1), ("pending", 0)]
    assert any("terminating its process" in line for line in _logs(app, stubborn))
    assert _row(app, stubborn).error == "killed: did not stop within 0.3s of the stop"
    assert api.get("/queue").get_json()["paused"] is True
    assert _violations(app) == []
