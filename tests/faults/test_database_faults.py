"""The worker's database connections cut, as a PostgreSQL restart cuts them: the queue moves on."""

from __future__ import annotations

from itertools import pairwise

import pytest
from flask import Flask

from app.extensions import db
from tests.conftest import ApiClient, wait_for
from tests.faults.conftest import WorkerProcess
from tests.faults.helpers import batch_row, batch_status, enqueue, item_rows, violations

pytestmark = [pytest.mark.faults, pytest.mark.usefixtures("settled")]


def cut_database_connections(app: Flask) -> int:
    """Terminate every other session on the test database; return how many there were."""
    with app.app_context():
        count = db.session.execute(
            db.text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        ).scalar_one()
        db.session.commit()
        return int(count)


def test_connections_cut_between_batches_the_next_batches_still_run_in_order(
    api: ApiClient, app: Flask, prefork_worker: WorkerProcess
) -> None:
    """Workers don't ping a pooled connection before use: the first statement on a dead one fails,
    its pool is replaced and the task repaired (a promotion retries, a failed run is recovered)."""
    prefork_worker.start()
    profile_ids = api.profiles(2)
    warm = [enqueue(app, profile_ids, "noop") for _ in range(3)]  # every pool process holds connections
    wait_for(lambda: all(batch_status(app, batch_id) == "done" for batch_id in warm), timeout=15)

    assert cut_database_connections(app) > 0

    batch_ids = [enqueue(app, profile_ids, "sleep", seconds=0.05) for _ in range(4)]
    wait_for(lambda: all(batch_status(app, batch_id) == "done" for batch_id in batch_ids), timeout=30)
    rows = [batch_row(app, batch_id) for batch_id in batch_ids]
    assert [row.succeeded_items for row in rows] == [2, 2, 2, 2]
    assert all(earlier.finished_at <= later.started_at for earlier, later in pairwise(rows))  # in order, one at a time
    assert violations(app) == []


def test_the_worker_commits_without_waiting_for_disk_and_does_not_ping_while_the_web_app_does(
    api: ApiClient, app: Flask, prefork_worker: WorkerProcess
) -> None:
    """workers/database.py's settings reach the real worker's pool processes (after their fork)."""
    prefork_worker.start()
    batch_id = enqueue(app, api.profiles(1), "probe")
    wait_for(lambda: batch_status(app, batch_id) == "done", timeout=15)
    assert item_rows(app, batch_id)[0].result == {"synchronous_commit": "off", "pre_ping": False}
    with app.app_context():
        assert db.session.execute(db.text("SHOW synchronous_commit")).scalar() == "on"
        assert db.engine.pool._pre_ping
        db.session.rollback()
