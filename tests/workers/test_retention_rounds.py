"""The repair timer of a worker or beat purges old finished batches when RETENTION_DAYS is set."""

from __future__ import annotations

import os
from datetime import timedelta

from flask import Flask

from app.services.liveness import ProcessRecord
from tests.conftest import wait_for
from tests.services.test_retention import batch_ids, seed_finished
from workers.liveness import ProcessLife


def test_a_repair_round_with_retention_days_purges_old_finished_batches(app: Flask, clean: None) -> None:
    old = seed_finished(app, age=timedelta(days=31))
    young = seed_finished(app, age=timedelta(days=29))
    record = ProcessRecord(name="celery@retention", kind="worker", host="testhost", pid=os.getpid())
    app.config["RETENTION_DAYS"] = 30
    try:
        life = ProcessLife(app, record, repair_every=0.2).start()
    finally:
        app.config["RETENTION_DAYS"] = 0
    try:
        wait_for(lambda: old not in batch_ids(app), timeout=15)
    finally:
        life.stop()
    assert batch_ids(app) == {young}


def test_without_retention_days_a_repair_round_deletes_nothing(app: Flask, clean: None) -> None:
    old = seed_finished(app, age=timedelta(days=3650))
    life = ProcessLife(app, ProcessRecord(name="celery@keeps", kind="worker", host="testhost", pid=os.getpid()), 0.2)
    assert life.start() is life
    try:
        # Two rounds are seen to run (each stamps repaired_at), and the batch is still there.
        from app.extensions import db

        def stamp() -> object:
            with app.app_context():
                value = db.session.execute(db.text("SELECT repaired_at FROM queue_state")).scalar()
                db.session.rollback()
            return value

        first = wait_for(stamp, timeout=15)
        wait_for(lambda: stamp() != first, timeout=15)
    finally:
        life.stop()
    assert batch_ids(app) == {old}
