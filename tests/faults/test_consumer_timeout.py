"""RabbitMQ's consumer_timeout: a batch run longer than it completes once.

A run holds its message unacknowledged for the whole batch (acks_late); RabbitMQ
closes the channel of a consumer that holds one longer than consumer_timeout
(30 minutes by default). The machine's server is older than 3.12, whose per-queue
`x-consumer-timeout` would let a test shorten it there, so the test starts a node
of its own with a 2-second timeout. It runs in the RabbitMQ pass (TEST_BROKER_URL).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from flask import Flask

from app.config import Settings
from app.services import dispatch
from tests.brokers import amqp_session, own_rabbitmq
from tests.conftest import ApiClient, wait_for
from tests.faults.conftest import WorkerProcess
from tests.faults.helpers import batch_row, enqueue, item_rows, log_lines, violations

pytestmark = [
    pytest.mark.faults,
    pytest.mark.usefixtures("settled"),
    pytest.mark.skipif(not amqp_session(), reason="RabbitMQ's own setting: runs when TEST_BROKER_URL is amqp://"),
]

CONSUMER_TIMEOUT_MS = 2000


def test_a_batch_longer_than_rabbitmqs_consumer_timeout_completes_once(
    api: ApiClient, app: Flask, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    node = tmp_path / "rabbitmq"
    node.mkdir()
    with own_rabbitmq(node, CONSUMER_TIMEOUT_MS) as broker_url:
        worker = WorkerProcess(settings, settings.redis_url, tmp_path, broker_url=broker_url)
        monkeypatch.setattr(dispatch, "celery", lambda: worker.sender)
        try:
            worker.start()
            profile_ids = api.profiles(4)
            # Four items of 1.5 s: the run holds its message three times as long as the timeout allows.
            batch_id = enqueue(app, profile_ids, "sleep", seconds=1.5)
            wait_for(lambda: batch_row(app, batch_id).status not in ("queued", "in_progress"), timeout=60)
            # The server did close the run's channel: Celery 5.7 calls that unrecoverable, and the
            # worker ends once the run it waited for is over.
            assert "timed out waiting for delivery acknowledgement" in _node_log(node)
            assert worker.process is not None and worker.process.wait(timeout=30) != 0

            # Started again (keep_running, systemd): the message RabbitMQ gave back reaches it, and finds
            # the batch over.
            worker.start()
            wait_for(lambda: f"batch {batch_id}: run stale" in worker.log(), timeout=30)
            wait_for(lambda: worker.waiting("batches") == 0, timeout=15)
        finally:
            worker.close()
    row = batch_row(app, batch_id)
    assert row.status == "done", (row.status, row.error)
    assert row.run_attempts == 1
    assert [(item.status, item.attempts) for item in item_rows(app, batch_id)] == [("succeeded", 1)] * 4
    assert sum(line.startswith("run began") for line in log_lines(app, batch_id)) == 1, log_lines(app, batch_id)
    assert violations(app) == []


def _node_log(node: Path) -> str:
    return "".join(path.read_text(errors="replace") for path in (node / "log").glob("*.log"))
