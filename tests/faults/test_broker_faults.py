"""The broker fails: Redis stopped and started again mid-batch, a promotion message purged from it."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pytest
from flask import Flask

from app import create_app
from app.config import Settings
from app.services import dispatch
from tests.conftest import ApiClient, RedisServer, wait_for
from tests.faults.conftest import WorkerProcess
from tests.faults.helpers import batch_row, batch_status, enqueue, enqueue_one_running_one_behind, item_rows, violations

pytestmark = [pytest.mark.faults, pytest.mark.usefixtures("settled")]


def _health(app: Flask) -> int:
    return app.test_client().get("/api/v1/health").status_code


@pytest.mark.redis_broker(reason="it stops and starts Redis as the broker; RabbitMQ's own outages are its operators'")
def test_redis_stopped_for_three_seconds_mid_batch_the_batch_and_the_next_one_still_complete(
    api: ApiClient,
    app: Flask,
    settings: Settings,
    own_redis: RedisServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    worker = WorkerProcess(settings, own_redis.url, tmp_path)
    monkeypatch.setattr(dispatch, "celery", lambda: worker.sender)
    web = create_app(replace(settings, redis_url=own_redis.url, broker_url=own_redis.url), TESTING=True)
    app.extensions["celery"].set_default()  # create_app made its own Celery app the default
    web.extensions["celery"].conf.broker_transport_options = worker.sender.conf.broker_transport_options
    try:
        worker.start()
        worker.start_beat(interval=1.0)  # as in production: the reconciler repairs what the outage lost
        profile_ids = api.profiles(4)
        batch_id = enqueue(app, profile_ids, "sleep", seconds=0.5)
        behind = enqueue(app, profile_ids[:1], "noop")
        wait_for(lambda: item_rows(app, batch_id)[1].status == "running", timeout=15)

        own_redis.stop()
        assert _health(web) == 503  # degraded, not crashed
        time.sleep(3)  # the length of the outage, the subject of the test: not a synchronization
        own_redis.start()

        wait_for(lambda: batch_status(app, behind) == "done", timeout=30)
        wait_for(lambda: _health(web) == 200, timeout=20)  # the worker answers pings again
    finally:
        worker.close()
    row, next_row = batch_row(app, batch_id), batch_row(app, behind)
    assert row.status == "done" and [item.status for item in item_rows(app, batch_id)] == ["succeeded"] * 4
    assert next_row.started_at >= row.finished_at  # one at a time, in order
    assert violations(app) == []


def test_a_promotion_purged_from_the_broker_is_made_good_by_beats_repair_round(
    api: ApiClient, app: Flask, prefork_worker: WorkerProcess
) -> None:
    # Control messages wait in the broker, to be purged; the worker's own repair timer is off
    # (an hour), so only beat's round can promote the head.
    prefork_worker.start(queues="batches")
    prefork_worker.start_beat(interval=1.0)
    profile_ids = api.profiles(2)
    batch_id, behind = enqueue_one_running_one_behind(app, profile_ids)
    wait_for(lambda: batch_status(app, batch_id) == "done", timeout=15)
    wait_for(lambda: prefork_worker.waiting("control"), timeout=15)  # the promotion is there
    prefork_worker.purge("control")  # ... and lost

    wait_for(lambda: batch_status(app, behind) == "done", timeout=15)  # beat's next round promoted it
    assert "reconciler: promoted batch" in (prefork_worker.log_dir / "beat.log").read_text()
    assert violations(app) == []
