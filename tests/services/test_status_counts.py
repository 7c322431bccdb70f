"""The batches counted by status as they change (migration 0011): always what counting them gives.

Each test changes batches the ways the service does (one at a time, in bulk, a status set to the one it
had, a renumbering that leaves statuses alone, a TRUNCATE) and checks the kept counts against a count of
the batches themselves, in the same snapshot.
"""

from __future__ import annotations

import os
import random
import threading
from collections.abc import Iterator

import pytest
from flask import Flask
from sqlalchemy import Connection, text

from app.extensions import db
from app.services import status_counts
from tests.conftest import wait_for

INSERT = text(
    """
    INSERT INTO batches (name, status, queue_rank, processor, parameters, profile_ids, total_items,
                         succeeded_items, failed_items, run_attempts, created_at, started_at, finished_at)
    SELECT 'b' || n, status, CASE WHEN status = 'queued' THEN CAST(:rank_from AS int) + n END, 'noop', '{}',
           '{}', 0, 0, 0, 0, now(), CASE WHEN status <> 'queued' THEN now() END,
           CASE WHEN status IN ('done', 'failed', 'stopped', 'cancelled') THEN now() END
    FROM generate_series(1, CAST(:count AS int)) AS n, CAST(:status AS varchar) AS status
    """
)


@pytest.fixture
def session(app: Flask, clean: None) -> Iterator[None]:
    with app.app_context():
        yield
        db.session.rollback()
        db.session.remove()


def counted() -> tuple[dict[str, int], dict[str, int]]:
    """The kept counts and the batches counted, read in one snapshot."""
    db.session.rollback()
    db.session.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))
    kept = status_counts.counts()
    real = {
        status: int(n) for status, n in db.session.execute(text("SELECT status, count(*) FROM batches GROUP BY status"))
    }
    db.session.rollback()
    return kept, real


def rows() -> int:
    return int(db.session.execute(text("SELECT count(*) FROM batch_status_changes")).scalar_one())


def test_the_counts_follow_single_bulk_and_no_op_changes(session: None) -> None:
    db.session.execute(INSERT, {"status": "queued", "count": 5, "rank_from": 0})
    db.session.execute(INSERT, {"status": "done", "count": 300, "rank_from": 0})
    db.session.commit()
    assert counted()[0] == {"queued": 5, "done": 300}
    before = rows()
    assert before == 2  # one row per status per statement, not one per batch

    # One batch promoted, another cancelled, one finished batch failed after all: a row pair each.
    first, second = db.session.execute(
        text("SELECT id FROM batches WHERE status = 'queued' ORDER BY id LIMIT 2")
    ).scalars()
    db.session.execute(
        text("UPDATE batches SET status = 'in_progress', queue_rank = NULL, started_at = now() WHERE id = :id"),
        {"id": first},
    )
    db.session.execute(
        text("UPDATE batches SET status = 'cancelled', queue_rank = NULL, finished_at = now() WHERE id = :id"),
        {"id": second},
    )
    db.session.execute(
        text("UPDATE batches SET status = 'failed' WHERE id = (SELECT min(id) FROM batches WHERE status = 'done')")
    )
    db.session.commit()
    assert rows() == before + 6
    # A renumbering, progress, a status set to the one it had: nothing counted.
    db.session.execute(text("UPDATE batches SET queue_rank = queue_rank + 100 WHERE status = 'queued'"))
    db.session.execute(text("UPDATE batches SET succeeded_items = 1 WHERE status = 'done'"))
    db.session.execute(text("UPDATE batches SET status = status WHERE status = 'done'"))
    db.session.commit()
    assert rows() == before + 6
    kept, real = counted()
    assert kept == real == {"queued": 3, "in_progress": 1, "cancelled": 1, "done": 299, "failed": 1}

    # The retention purge's kind of delete, in bulk.
    db.session.execute(text("DELETE FROM batches WHERE status IN ('done', 'cancelled')"))
    db.session.commit()
    kept, real = counted()
    assert kept == real == {"queued": 3, "in_progress": 1, "failed": 1}


def test_a_truncate_empties_the_counts(session: None) -> None:
    db.session.execute(INSERT, {"status": "done", "count": 10, "rank_from": 0})
    db.session.commit()
    db.session.execute(text("TRUNCATE batches CASCADE"))
    db.session.commit()
    assert counted() == ({}, {})
    assert rows() == 0


def test_compacting_folds_the_rows_into_one_per_status(session: None) -> None:
    for _ in range(4):
        db.session.execute(INSERT, {"status": "done", "count": 10, "rank_from": 0})
    db.session.execute(INSERT, {"status": "failed", "count": 2, "rank_from": 0})
    db.session.execute(text("DELETE FROM batches WHERE status = 'failed'"))
    db.session.commit()
    status_counts.compact()
    assert rows() == 1  # failed came to 0: no row at all
    kept, real = counted()
    assert kept == real == {"done": 40}


def test_compactions_racing_changes_on_other_connections_keep_every_count(app: Flask, session: None) -> None:
    """Changes and compactions interleave as they will: workers' timers fold while batches change."""
    db.session.execute(INSERT, {"status": "queued", "count": 200, "rank_from": 0})
    db.session.commit()
    errors: list[BaseException] = []
    stop = threading.Event()

    engine = db.engine

    def changes(seed: int) -> None:
        chance = random.Random(seed)
        try:
            with engine.connect() as connection:
                for _ in range(60):
                    change(connection, chance)
        except BaseException as exc:  # noqa: BLE001  (reported below)
            errors.append(exc)

    def compactions() -> None:
        try:
            while not stop.is_set():
                with app.app_context():
                    status_counts.compact()
                    db.session.remove()
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    changers = [threading.Thread(target=changes, args=(seed,)) for seed in range(3)]
    folders = [threading.Thread(target=compactions) for _ in range(2)]
    for thread in folders + changers:
        thread.start()
    for thread in changers:
        thread.join(60)
    stop.set()
    for thread in folders:
        thread.join(60)
    assert errors == []
    kept, real = counted()
    assert kept == real
    status_counts.compact()
    assert counted()[0] == real


def change(connection: Connection, chance: random.Random) -> None:
    """One committed change of a kind the service makes, on a batch picked at random."""
    kind = chance.choice(["finish", "insert", "delete"])
    if kind == "finish":
        connection.execute(
            text(
                "UPDATE batches SET status = :to, queue_rank = NULL, started_at = now(), finished_at = now()"
                " WHERE id = (SELECT id FROM batches WHERE status = 'queued' ORDER BY random() LIMIT 1)"
            ),
            {"to": chance.choice(["done", "failed", "cancelled"])},
        )
    elif kind == "insert":
        connection.execute(INSERT, {"status": "done", "count": chance.randint(1, 5), "rank_from": 0})
    else:
        some = "SELECT id FROM batches WHERE status <> 'queued' ORDER BY random() LIMIT 3"
        connection.execute(text(f"DELETE FROM batches WHERE id IN ({some})"))
    connection.commit()


def test_every_worker_and_beat_folds_the_rows_on_its_repair_timer(app: Flask, session: None) -> None:
    from app.services.liveness import ProcessRecord
    from workers.liveness import ProcessLife

    for _ in range(5):
        db.session.execute(INSERT, {"status": "done", "count": 2, "rank_from": 0})
    db.session.commit()
    assert rows() == 5
    record = ProcessRecord(name="beat@counts:1", kind="beat", host="counts", pid=os.getpid())
    life = ProcessLife(app, record, repair_every=0.2).start()
    try:
        wait_for(lambda: rows() == 1, timeout=20)
    finally:
        life.stop()
    assert counted()[0] == {"done": 10}


def test_a_listing_by_status_at_most_takes_its_total_from_the_counts(app: Flask, session: None) -> None:
    """Counting the batches was 45 ms of the table's first page at a million: by status alone, no count runs."""
    from sqlalchemy import event

    from app.services.batches import BatchFilter, list_batches

    db.session.execute(INSERT, {"status": "queued", "count": 3, "rank_from": 0})
    db.session.execute(INSERT, {"status": "done", "count": 70, "rank_from": 0})
    db.session.execute(INSERT, {"status": "failed", "count": 4, "rank_from": 0})
    db.session.commit()
    statements: list[str] = []

    def seen(conn: object, cursor: object, statement: str, *args: object) -> None:
        statements.append(statement)

    event.listen(db.engine, "before_cursor_execute", seen)
    try:
        listings = (None, BatchFilter(), BatchFilter(statuses=("done", "failed")), BatchFilter(statuses=("stopped",)))
        totals = [list_batches(1, 50, filters).total for filters in listings]
        # (a filtered page counts the ranks ahead of its first queued row: that count stays)
        counting = [statement for statement in statements if "count(*)" in statement and "queue_rank" not in statement]
        assert totals == [77, 77, 74, 0]
        assert counting == []
        # Narrowed by anything else, the batches are counted.
        assert list_batches(1, 50, BatchFilter(statuses=("done",), q="b1")).total == 11  # b1, b10..b19 of 70
    finally:
        event.remove(db.engine, "before_cursor_execute", seen)
    assert any("count(*)" in statement and "queue_rank" not in statement for statement in statements)
