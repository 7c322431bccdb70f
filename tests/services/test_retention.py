"""The retention purge (app/services/retention.py) on real PostgreSQL: what goes, what stays, and the queue lock."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
from flask import Flask

from app.extensions import db
from app.services import queue_manager, retention
from app.services.queue_manager import NewBatch
from app.services.retention import PurgeResult
from tests.conftest import insert_profiles, wait_for

pytestmark = pytest.mark.usefixtures("clean")

OLD = timedelta(days=100)


def db_now(app: Flask) -> datetime:
    with app.app_context():
        now: datetime = db.session.execute(db.text("SELECT now()")).scalar_one()
        db.session.rollback()
    return now


def seed_finished(
    app: Flask,
    status: str = "done",
    age: timedelta = OLD,
    items: int = 2,
    logs: int = 3,
    finished_at: datetime | None = None,
    queue_rank: int | None = None,
) -> int:
    """A batch written straight into the tables, finished `age` ago, with items and log lines; its id."""
    with app.app_context():
        profiles = insert_profiles(max(items, 1), prefix=f"r{datetime.now().timestamp()}")
        batch_id: int = db.session.execute(
            db.text(
                "INSERT INTO batches (name, status, queue_rank, processor, parameters, profile_ids, total_items,"
                " succeeded_items, failed_items, run_attempts, created_at, started_at, finished_at)"
                " VALUES ('old', :status, :rank, 'noop', '{}', :profiles, :items, :items, 0, 1,"
                " now() - :age - interval '1 minute', now() - :age - interval '1 minute',"
                " coalesce(:finished_at, now() - :age)) RETURNING id"
            ),
            {
                "status": status,
                "rank": queue_rank,
                "profiles": profiles[:items],
                "items": items,
                "age": age,
                "finished_at": finished_at,
            },
        ).scalar_one()
        db.session.execute(
            db.text(
                "INSERT INTO batch_items (batch_id, position, profile_id, status, attempts)"
                " SELECT :id, n, (:profiles)[n], 'succeeded', 1 FROM generate_series(1, :items) AS n"
            ),
            {"id": batch_id, "profiles": profiles, "items": items},
        )
        db.session.execute(
            db.text(
                "INSERT INTO batch_logs (batch_id, at, level, message)"
                " SELECT :id, now() - :age, 'info', 'line ' || n FROM generate_series(1, :logs) AS n"
            ),
            {"id": batch_id, "logs": logs, "age": age},
        )
        db.session.commit()
    return batch_id


def delivery(app: Flask, batch_id: int, state: str) -> int:
    """A completion webhook's delivery of the batch (`pending`, `delivered` or `gave_up`) with one attempt."""
    with app.app_context():
        delivery_id: int = db.session.execute(
            db.text(
                "INSERT INTO callback_deliveries (batch_id, status, created_at, next_attempt_at, attempts,"
                " delivered_at, gave_up_at)"
                " VALUES (:id, 'done', now(), now(), 1,"
                " CASE WHEN :state = 'delivered' THEN now() END, CASE WHEN :state = 'gave_up' THEN now() END)"
                " RETURNING id"
            ),
            {"id": batch_id, "state": state},
        ).scalar_one()
        db.session.execute(
            db.text(
                "INSERT INTO callback_attempts (delivery_id, batch_id, at, status_code) VALUES (:d, :b, now(), 500)"
            ),
            {"d": delivery_id, "b": batch_id},
        )
        db.session.commit()
    return delivery_id


def count(app: Flask, sql: str, **params: Any) -> int:
    with app.app_context():
        value = int(db.session.execute(db.text(sql), params).scalar_one())
        db.session.rollback()
    return value


def batch_ids(app: Flask) -> set[int]:
    with app.app_context():
        ids = set(db.session.execute(db.text("SELECT id FROM batches")).scalars())
        db.session.rollback()
    return ids


def purge(app: Flask, age: timedelta = timedelta(days=90), **kwargs: Any) -> PurgeResult:
    with app.app_context():
        return retention.purge(retention.cutoff(age), **kwargs)


def pause(app: Flask) -> None:
    """Pause the queue, so that a batch enqueued by a test waits instead of running."""
    with app.app_context():
        db.session.execute(db.text("UPDATE queue_state SET paused = true, paused_by = 'test', paused_at = now()"))
        db.session.commit()


def test_purge_deletes_batches_finished_before_the_cutoff_and_keeps_one_finished_at_it(app: Flask) -> None:
    before = db_now(app) - timedelta(days=90)
    older = seed_finished(app, finished_at=before - timedelta(microseconds=1))
    at_cutoff = seed_finished(app, finished_at=before)
    younger = seed_finished(app, finished_at=before + timedelta(seconds=1))
    with app.app_context():
        result = retention.purge(before)
    assert (result.batches, result.items, result.logs, result.chunks) == (1, 2, 3, 1)
    assert batch_ids(app) == {at_cutoff, younger}
    assert older not in batch_ids(app)


def test_purge_deletes_every_terminal_status_and_never_a_waiting_or_running_batch(app: Flask) -> None:
    ended = [seed_finished(app, status) for status in ("done", "failed", "stopped", "cancelled")]
    # finished_at set on a waiting and a running batch, as on a resumed one: their status alone keeps them.
    queued = seed_finished(app, "queued", queue_rank=1)
    stopping = seed_finished(app, "stopping")
    result = purge(app)
    assert result.batches == 4
    assert batch_ids(app) == {queued, stopping}
    assert not set(ended) & batch_ids(app)


def test_purge_takes_items_logs_and_ended_webhook_records_and_leaves_other_batches_rows(app: Flask) -> None:
    old = seed_finished(app, items=3, logs=5)
    delivery(app, old, "delivered")
    young = seed_finished(app, age=timedelta(days=1), items=2, logs=4)
    delivery(app, young, "delivered")
    result = purge(app)
    assert (result.batches, result.items, result.logs, result.webhook_attempts) == (1, 3, 5, 1)
    for table in ("batch_items", "batch_logs", "callback_deliveries", "callback_attempts"):
        assert count(app, f"SELECT count(*) FROM {table} WHERE batch_id = :id", id=old) == 0, table
    assert [
        count(app, f"SELECT count(*) FROM {t} WHERE batch_id = :id", id=young) for t in ("batch_items", "batch_logs")
    ] == [
        2,
        4,
    ]
    assert count(app, "SELECT count(*) FROM callback_attempts WHERE batch_id = :id", id=young) == 1


def test_purge_goes_in_chunks_oldest_first_and_reports_running_totals(app: Flask) -> None:
    ids = [seed_finished(app, age=OLD + timedelta(days=5 - n), items=1, logs=1) for n in range(5)]  # oldest first
    heard: list[PurgeResult] = []
    first = purge(app, chunk=2, max_chunks=1)
    assert (first.batches, first.chunks, first.more) == (2, 1, True)
    assert batch_ids(app) == set(ids[2:])
    rest = purge(app, chunk=2, on_chunk=heard.append)
    assert (rest.batches, rest.items, rest.logs, rest.chunks, rest.more) == (3, 3, 3, 2, False)
    assert [(r.chunks, r.batches) for r in heard] == [(1, 2), (2, 3)]
    assert batch_ids(app) == set()


def test_a_dry_run_counts_what_a_purge_would_delete_and_deletes_nothing(app: Flask) -> None:
    for _ in range(3):
        seed_finished(app, items=2, logs=4)
    seed_finished(app, age=timedelta(days=1))
    dry = purge(app, chunk=2, dry_run=True)
    assert (dry.dry_run, dry.batches, dry.items, dry.logs, dry.chunks) == (True, 3, 6, 12, 2)
    assert len(batch_ids(app)) == 4
    done = purge(app, chunk=2)
    assert (done.batches, done.items, done.logs, done.chunks) == (3, 6, 12, 2)


@pytest.mark.parametrize("ended", ["delivered", "gave_up"])
def test_a_batch_whose_webhook_is_still_retried_stays_until_its_delivery_ends(app: Flask, ended: str) -> None:
    waiting_webhook = seed_finished(app)
    delivery_id = delivery(app, waiting_webhook, "pending")
    assert purge(app).batches == 0
    assert batch_ids(app) == {waiting_webhook}
    column = "delivered_at" if ended == "delivered" else "gave_up_at"
    with app.app_context():
        db.session.execute(
            db.text(f"UPDATE callback_deliveries SET {column} = now() WHERE id = :id"), {"id": delivery_id}
        )
        db.session.commit()
    assert purge(app).batches == 1
    assert batch_ids(app) == set()


def test_a_failed_batch_stays_while_its_retry_waits(app: Flask) -> None:
    failed = seed_finished(app, "failed")
    retry = seed_finished(app, "queued", queue_rank=1)
    with app.app_context():
        db.session.execute(db.text("UPDATE batches SET retry_of = :f WHERE id = :r"), {"f": failed, "r": retry})
        db.session.commit()
    assert purge(app).batches == 0
    with app.app_context():  # the retry ended (and is young): the original may go, its retry_of is cleared
        db.session.execute(
            db.text("UPDATE batches SET status = 'done', queue_rank = NULL, finished_at = now() WHERE id = :r"),
            {"r": retry},
        )
        db.session.commit()
    assert purge(app).batches == 1
    assert batch_ids(app) == {retry}
    assert count(app, "SELECT count(*) FROM batches WHERE retry_of IS NOT NULL") == 0


def _in_thread(app: Flask, action: Callable[[], Any]) -> Callable[[], Any]:
    """Run `action` in an app context on a thread of its own; the function returned waits for its result."""
    outcome: list[Any] = []

    def run() -> None:
        with app.app_context():
            try:
                outcome.append(action())
            except BaseException as exc:  # noqa: BLE001  (re-raised by the waiter)
                outcome.append(exc)
            finally:
                db.session.remove()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()

    def result() -> Any:
        wait_for(lambda: outcome, timeout=20)
        if isinstance(outcome[0], BaseException):
            raise outcome[0]
        return outcome[0]

    return result


def test_a_purge_runs_to_its_end_while_another_transaction_holds_the_queue_lock(app: Flask) -> None:
    for _ in range(5):
        seed_finished(app)
    with app.app_context():
        holder = db.engine.connect()
        try:
            holder.begin()
            holder.execute(db.text("SELECT 1 FROM queue_state WHERE id = 1 FOR UPDATE"))  # the queue lock
            result = _in_thread(app, lambda: retention.purge(retention.cutoff(timedelta(days=90)), chunk=2))()
        finally:
            holder.rollback()
            holder.close()
    assert (result.batches, result.chunks) == (5, 3)


def test_queue_changes_complete_while_a_purge_chunks_transaction_is_open(app: Flask) -> None:
    for _ in range(3):
        seed_finished(app)
    pause(app)
    with app.app_context():
        profiles = insert_profiles(1, prefix="live")
        chunk = db.engine.connect()
        try:
            chunk.begin()
            row = chunk.execute(
                retention.PURGE_CHUNK, {"before": retention.cutoff(timedelta(days=90)), "chunk": 10}
            ).one()
            assert row.batches == 3  # deleted, not committed: the chunk's locks are held
            pid = chunk.execute(db.text("SELECT pg_backend_pid()")).scalar_one()
            queue_locks = db.session.execute(
                db.text(
                    "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation"
                    " WHERE l.pid = :pid AND c.relname = 'queue_state'"
                ),
                {"pid": pid},
            ).scalar_one()
            db.session.rollback()
            assert queue_locks == 0

            def steer() -> list[int]:
                new = [
                    queue_manager.enqueue(NewBatch(f"n{n}", "noop", {}, profiles, created_by="test"))[0].id
                    for n in range(2)
                ]
                queue_manager.move(new[1], 1, "test")
                return new

            first, second = _in_thread(app, steer)()
        finally:
            chunk.commit()
            chunk.close()
    with app.app_context():
        order = list(
            db.session.execute(db.text("SELECT id FROM batches WHERE status = 'queued' ORDER BY queue_rank")).scalars()
        )
        db.session.rollback()
    assert order == [second, first]
    assert batch_ids(app) == {first, second}


def test_the_schedule_purges_once_an_hour_and_goes_on_each_round_while_batches_are_left(app: Flask) -> None:
    for _ in range(5):
        seed_finished(app, items=1, logs=1)
    schedule = retention.Schedule(days=90, chunks_per_round=1, chunk=2)
    with app.app_context():
        rounds = [schedule.run_if_due() for _ in range(4)]
    assert [(r.batches, r.more) if r else None for r in rounds] == [(2, True), (2, True), (1, False), None]
    seed_finished(app)
    with app.app_context():
        assert schedule.run_if_due() is None  # within the hour
    assert len(batch_ids(app)) == 1
    with app.app_context():
        assert retention.Schedule(days=0).run_if_due() is None  # RETENTION_DAYS unset: never


def test_a_purge_counts_the_batches_it_deleted_in_the_metrics(app: Flask) -> None:
    from tests.metrics.scrapes import samples, value

    def purged() -> float:
        return value(samples(app.test_client().get("/metrics").text), "batchq_purged_batches_total")

    for _ in range(3):
        seed_finished(app)
    before = purged()
    assert purge(app, chunk=2).batches == 3
    assert purged() - before == 3
