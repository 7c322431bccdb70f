"""Reading and nudging the database from fault tests: each call in its own app context."""

from __future__ import annotations

from typing import Any

from flask import Flask

from app.extensions import db
from app.models import Batch
from app.services import queue_manager
from app.services.queue_manager import NewBatch
from tests.conftest import held_leases, queue_violations


def batch_row(app: Flask, batch_id: int) -> Any:
    with app.app_context():
        row = db.session.execute(
            db.select(Batch.__table__, Batch.queue_position.label("queue_position")).where(Batch.id == batch_id)
        ).one()
        db.session.rollback()
        return row


def item_rows(app: Flask, batch_id: int) -> list[Any]:
    with app.app_context():
        rows = db.session.execute(
            db.text("SELECT * FROM batch_items WHERE batch_id = :id ORDER BY position"), {"id": batch_id}
        ).all()
        db.session.rollback()
        return rows


def log_lines(app: Flask, batch_id: int) -> list[str]:
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


def run_sql(app: Flask, statement: str, **params: Any) -> None:
    with app.app_context():
        db.session.execute(db.text(statement), params)
        db.session.commit()


def age_heartbeat(app: Flask, batch_id: int) -> None:
    """Make the batch's last sign of life an hour old."""
    run_sql(app, "UPDATE batches SET heartbeat_at = now() - interval '1 hour' WHERE id = :id", id=batch_id)


def violations(app: Flask) -> list[str]:
    with app.app_context():
        return queue_violations()


def send_and_wait(app: Flask, name: str, *args: Any, task_id: str | None = None, timeout: float = 10) -> Any:
    queue = "batches" if name == "batches.run" else "control"
    celery = app.extensions["celery"]
    if task_id is not None:  # a redelivery reuses its id: don't read an earlier delivery's result
        celery.AsyncResult(task_id).forget()
    result = celery.send_task(name, args=list(args), task_id=task_id, queue=queue, ignore_result=False)
    return result.get(timeout=timeout)


def batch_status(app: Flask, batch_id: int) -> str:
    return batch_row(app, batch_id).status


def lease_free(app: Flask, batch_id: int) -> bool:
    with app.app_context():
        return batch_id not in held_leases()


def heartbeat_older_than(app: Flask, batch_id: int, seconds: float) -> bool:
    with app.app_context():
        old = db.session.scalar(
            db.text("SELECT now() - heartbeat_at > make_interval(secs => :s) FROM batches WHERE id = :id"),
            {"id": batch_id, "s": seconds},
        )
        db.session.rollback()
        return bool(old)


def enqueue(app: Flask, profile_ids: list[int], processor: str, item_timeout: float = 3600.0, **parameters: Any) -> int:
    with app.app_context():
        batch, _ = queue_manager.enqueue(
            NewBatch(
                name=processor,
                processor=processor,
                parameters=parameters,
                profile_ids=profile_ids,
                item_timeout=item_timeout,
                created_by="test",
            )
        )
        return batch.id


def enqueue_one_running_one_behind(app: Flask, profile_ids: list[int], processor: str = "noop") -> tuple[int, int]:
    """Two batches, the second surely queued behind the running first, however quick the first is.

    Both are enqueued while the queue is paused, then Start promotes the first. Enqueued one after
    the other instead, the first can be done before the second comes, which then starts by itself.
    """
    run_sql(app, "UPDATE queue_state SET paused = true, paused_by = 'test', paused_at = now()")
    first, behind = enqueue(app, profile_ids, processor), enqueue(app, profile_ids, processor)
    with app.app_context():
        assert queue_manager.start("test").running.id == first  # type: ignore[union-attr]
    assert batch_status(app, behind) == "queued"
    return first, behind
