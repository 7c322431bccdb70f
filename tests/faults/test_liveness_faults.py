"""Never silent, never stuck: liveness from heartbeats, repairs without beat, a hard stop that ends promptly."""

from __future__ import annotations

import statistics
import time
from typing import Any

import pytest
from flask import Flask

from app.extensions import db
from app.services import liveness
from app.services.health import NO_WORKER, read_health
from tests.brokers import amqp_session
from tests.conftest import ApiClient, wait_for
from tests.faults.conftest import WorkerProcess
from tests.faults.helpers import (
    batch_row,
    batch_status,
    enqueue,
    enqueue_one_running_one_behind,
    item_rows,
    lease_free,
    log_lines,
    violations,
)

pytestmark = [pytest.mark.faults, pytest.mark.usefixtures("settled")]


def _health(app: Flask) -> tuple[int, dict[str, Any], float]:
    began = time.perf_counter()
    response = app.test_client().get("/api/v1/health")
    return response.status_code, response.get_json(), time.perf_counter() - began


def test_health_polled_300_times_across_a_worker_start_and_running_batches_never_flaps_once_up(
    api: ApiClient, app: Flask, prefork_worker: WorkerProcess
) -> None:
    """Polled from before the worker is up (however long it takes to start) until 300 answers are in, and
    at least 150 of them since it came up: once up, every answer is 200 with the worker in it."""
    profile_ids = api.profiles(3)
    prefork_worker.start(wait=False)
    answers: list[tuple[int, bool]] = []
    took: list[float] = []
    batches: list[int] = []
    first_up: int | None = None
    began = time.monotonic()
    while len(answers) < 300 or first_up is None or len(answers) - first_up < 150:
        assert first_up is not None or time.monotonic() - began < 60, "the worker did not come up within 60 s"
        status, body, seconds = _health(app)
        up = prefork_worker.hostname in body["workers"]
        if up and first_up is None:
            first_up = len(answers)
        answers.append((status, up))
        took.append(seconds)
        if up and len(batches) < 6 and len(answers) % 10 == 0:  # keep the worker busy while it is polled
            batches.append(enqueue(app, profile_ids, "sleep", seconds=0.2))
        time.sleep(0.03)  # the polling pace (answers spread over the worker's start), not a synchronization
    assert first_up is not None
    after = answers[first_up:]
    assert after == [(200, True)] * len(after), [index for index, answer in enumerate(after) if answer != (200, True)]
    assert len(batches) == 6
    wait_for(lambda: all(batch_status(app, batch_id) == "done" for batch_id in batches), timeout=30)
    print(f"health: median {statistics.median(took) * 1000:.1f} ms, max {max(took) * 1000:.1f} ms")


def test_with_beat_killed_health_says_beat_missing_and_the_workers_still_repair_a_lost_promotion(
    api: ApiClient, app: Flask, prefork_worker: WorkerProcess
) -> None:
    prefork_worker.start(queues="batches", repair_every=1.0)  # control messages wait in the broker, to be purged
    prefork_worker.start_beat(interval=1.0)
    wait_for(lambda: _health(app)[1]["beat"] == "ok", timeout=15)
    prefork_worker.kill_beat()
    wait_for(lambda: _health(app)[1]["beat"] == "missing", timeout=15)  # its record aged out (three heartbeats)
    status, body, _ = _health(app)
    assert status == 200 and prefork_worker.hostname in body["workers"]  # a missing beat alone is no fault

    profile_ids = api.profiles(2)
    first, behind = enqueue_one_running_one_behind(app, profile_ids)
    wait_for(lambda: batch_status(app, first) == "done", timeout=15)
    wait_for(lambda: prefork_worker.waiting("control"), timeout=15)  # the promotion is there
    prefork_worker.purge("control")  # ... and lost

    # Nothing else is left to promote it: beat is dead and the worker consumes no control messages.
    wait_for(lambda: batch_status(app, behind) == "done", timeout=30)
    worker_log = (prefork_worker.log_dir / f"worker{prefork_worker.started}.log").read_text()
    assert f"reconciler: promoted batch {behind}" in worker_log  # the worker's own repair round did it
    assert violations(app) == []


def test_a_hard_stopped_batch_is_stopped_by_the_first_round_after_its_process_dies_not_at_the_heartbeat_timeout(
    api: ApiClient, app: Flask, prefork_worker: WorkerProcess
) -> None:
    # A heartbeat timeout of an hour: only the free lease can tell that the run is gone.
    prefork_worker.start(env={"BATCH_HEARTBEAT_TIMEOUT": "3600"})
    profile_ids = api.profiles(2)
    stubborn = enqueue(app, profile_ids, "stubborn", seconds=60)
    wait_for(lambda: item_rows(app, stubborn)[0].status == "running", timeout=15)
    assert api.post(f"/batches/{stubborn}/stop").get_json()["status"] == "stopping"
    prefork_worker.kill()  # the hard stop's end of it, or any death: no signal reaches anyone
    wait_for(lambda: lease_free(app, stubborn), timeout=15)
    assert batch_status(app, stubborn) == "stopping"

    prefork_worker.start(repair_every=1.0, env={"BATCH_HEARTBEAT_TIMEOUT": "3600"})
    # Its repair rounds come every second; the heartbeat timeout is an hour away.
    wait_for(lambda: batch_status(app, stubborn) == "stopped", timeout=30)
    assert [item.status for item in item_rows(app, stubborn)] == ["pending", "pending"]
    assert log_lines(app, stubborn)[-1] == "stopped (2 items left pending)"
    assert batch_row(app, stubborn).queue_position is None
    assert violations(app) == []


def test_every_worker_killed_the_service_says_why_within_5_s_and_the_batch_resumes_when_one_starts(
    api: ApiClient, app: Flask, prefork_worker: WorkerProcess, without_workers: None
) -> None:
    """The service reads the killed worker's silence from its own record: gone once its last heartbeat,
    which came before the kill, is three beats old, so within three seconds of the kill. The clock that
    counts is the database's, so the test waits on it rather than timing its own, possibly starved, polls."""
    assert liveness.MISSED_BEATS * liveness.HEARTBEAT_SECONDS < 5
    prefork_worker.start()
    profile_ids = api.profiles(6)
    # Item 2 holds its first attempt until the worker dies: killed surely mid-batch.
    running = enqueue(app, profile_ids, "hang", hang_profiles=["p-1"], first_attempt_only=True)
    behind = enqueue(app, profile_ids[:1], "noop")
    wait_for(lambda: item_rows(app, running)[1].status == "running", timeout=15)
    assert _waiting(api, behind) == ("behind", f"waiting for batch {running} (#1 starts next)")

    prefork_worker.kill()
    wait_for(lambda: _silent_for(app, prefork_worker.hostname) >= liveness.MISSED_BEATS * liveness.HEARTBEAT_SECONDS)
    # From that moment on, every answer says why.
    assert _waiting(api, running)[0] == "no_worker" and _waiting(api, behind)[0] == "no_worker"
    with app.app_context():
        assert NO_WORKER in read_health().problems()  # the banner's sentence
    status, body, _ = _health(app)
    assert (status, body["workers"]) == (503, [])

    prefork_worker.start(repair_every=1.0)  # its repair round re-dispatches the lost run
    wait_for(lambda: batch_status(app, behind) == "done", timeout=30)
    assert batch_status(app, running) == "done"
    assert [item.status for item in item_rows(app, running)] == ["succeeded"] * 6
    assert _waiting(api, behind) == (None, None)
    with app.app_context():
        assert read_health().problems() == []
    assert violations(app) == []


def _silent_for(app: Flask, name: str) -> float:
    """Seconds since the process's last heartbeat, by the database's clock."""
    with app.app_context():
        seconds = db.session.scalar(
            db.text("SELECT extract(epoch FROM now() - last_seen_at) FROM service_processes WHERE name = :name"),
            {"name": name},
        )
        db.session.rollback()
    assert seconds is not None, f"{name} left no record"
    return float(seconds)


def _waiting(api: ApiClient, batch_id: int) -> tuple[str | None, str | None]:
    body = api.get(f"/batches/{batch_id}").get_json()
    return body["waiting_code"], body["waiting_reason"]


def test_a_worker_killed_and_restarted_resumes_its_batch_without_waiting_for_the_heartbeat_timeout(
    api: ApiClient, app: Flask, prefork_worker: WorkerProcess
) -> None:
    # A heartbeat timeout of an hour: only the worker's own liveness record can tell that its run is gone.
    slow_timeout = {"BATCH_HEARTBEAT_TIMEOUT": "3600"}
    prefork_worker.start(env=slow_timeout)
    profile_ids = api.profiles(4)
    # Item 2 holds its first attempt until the worker dies: killed surely mid-batch.
    batch_id = enqueue(app, profile_ids, "hang", hang_profiles=["p-1"], first_attempt_only=True)
    wait_for(lambda: item_rows(app, batch_id)[1].status == "running", timeout=15)
    prefork_worker.kill()

    prefork_worker.start(repair_every=1.0, env=slow_timeout)  # same node name, a new process
    # Well within a minute, an hour before the heartbeat timeout; the log line says why it was lost.
    wait_for(lambda: batch_status(app, batch_id) == "done", timeout=60)
    # On Redis the repair round finds the run lost; RabbitMQ gives the dead connection's message back
    # at once, and the restarted worker resumes that same dispatch (the round then finds nothing lost).
    logs = log_lines(app, batch_id)
    if amqp_session():
        assert any(line.startswith("run began") and line.endswith("(attempt 2)") for line in logs), logs
    else:
        assert "run lost (its worker is gone); dispatching it again" in logs
    assert [item.status for item in item_rows(app, batch_id)] == ["succeeded"] * 4
    assert violations(app) == []
