"""The queue's rules, read back from the database: what the soaks and the fault tests check after every step.

One set of queries for bench.recovery, bench.several_hosts and the tests
(tests.conftest.queue_violations is this module's), so that a rule is written
once. Each check returns what it found wrong; an empty list means the rule held.
They run inside an app context, on the database the processes under test share,
and work as well while batches still run as after the last one ended: the
running batch and its running item come last in every ordering they use.
"""

from __future__ import annotations

from typing import Any

RUNNING = ("in_progress", "stopping")
# How an item's end is logged (app/services/runs/context.py item_lines): "item 3/10 (alice) succeeded".
ITEM_END = r"^item [0-9]+/[0-9]+ \(.*\) (succeeded$|failed: )"


def fetch(statement: str, **params: Any) -> list[Any]:
    """Rows of one query, in a fresh transaction."""
    from app.extensions import db

    rows = db.session.execute(db.text(statement), params).all()
    db.session.rollback()
    return rows


def scalar(statement: str, **params: Any) -> Any:
    rows = fetch(statement, **params)
    return rows[0][0] if rows else None


def queue_violations() -> list[str]:
    """Check the contract's queue rules against the database; return what is wrong.

    At most one batch running, and at position 0; the queued ones at 1..n in
    rank order; no other batch with a position or rank. Reads the stored ranks
    and the positions the service derives from them, one batch at a time (the
    per-row count), in one snapshot.
    """
    from app.extensions import db
    from app.models import Batch

    db.session.rollback()
    db.session.execute(db.text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))
    rows = db.session.execute(db.text("SELECT id, status, queue_rank FROM batches ORDER BY id")).all()
    positions = dict(db.session.execute(db.select(Batch.id, Batch.queue_position)).all())
    db.session.rollback()
    problems = []
    running = [r for r in rows if r.status in RUNNING]
    if len(running) > 1:
        problems.append(f"{len(running)} running batches: {[r.id for r in running]}")
    problems += [f"running batch {r.id} at {positions[r.id]}" for r in running if positions[r.id] != 0]
    queued = sorted((r for r in rows if r.status == "queued"), key=lambda r: r.queue_rank)
    if [positions[r.id] for r in queued] != list(range(1, len(queued) + 1)):
        problems.append(f"queued positions in rank order are {[positions[r.id] for r in queued]}")
    problems += [
        f"batch {r.id} ({r.status}) at {positions[r.id]} with rank {r.queue_rank}"
        for r in rows
        if r.status not in ("queued", *RUNNING) and (positions[r.id], r.queue_rank) != (None, None)
    ]
    return problems


def creation_order_violations() -> list[str]:
    """Where the queue broke creation order (for runs that never move a batch): queued ranks, then starts, by id."""
    problems = []
    ranks = [row.id for row in fetch("SELECT id FROM batches WHERE status = 'queued' ORDER BY queue_rank")]
    if ranks != sorted(ranks):
        problems.append(f"queued batches in position order are not in creation order: {ranks[:20]}")
    early = fetch(
        "SELECT id, prev_id FROM ("
        " SELECT id, lag(id) OVER (ORDER BY started_at, id) AS prev_id FROM batches WHERE started_at IS NOT NULL) s"
        " WHERE prev_id > id"
    )
    problems += [f"batch {row.id} started after batch {row.prev_id}, created later" for row in early]
    return problems


def batch_overlaps() -> list[Any]:
    """Batches that started before the one started just before them had finished (an unended one overlaps)."""
    return fetch(
        "SELECT id, started_at, prev_id, prev_finished FROM ("
        " SELECT id, started_at, lag(id) OVER w AS prev_id, lag(finished_at) OVER w AS prev_finished"
        " FROM batches WHERE started_at IS NOT NULL WINDOW w AS (ORDER BY started_at, id)) s"
        " WHERE prev_id IS NOT NULL AND (prev_finished IS NULL OR started_at < prev_finished)"
    )


def item_overlaps() -> list[Any]:
    """Items that started before an item started ahead of them had ended.

    Only ended items count: a death leaves the attempts it cut short unfinished,
    and with outcomes written in groups (app/services/runs/items.py) that may be
    more than one item, the one in hand and those whose outcome was not written
    yet; they start again, and end, later. Once every batch has ended (the
    soak's last check) every item has, and every overlap shows.
    """
    return fetch(
        "SELECT batch_id, id, started_at, prev_end FROM ("
        " SELECT batch_id, id, started_at, max(finished_at) OVER w AS prev_end"
        " FROM batch_items WHERE started_at IS NOT NULL"
        " WINDOW w AS (ORDER BY started_at, id ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)) s"
        " WHERE started_at < prev_end"
    )


def items_ended_twice() -> list[Any]:
    """Items whose end was written more than once: an item that had succeeded (or failed) and ran again.

    An item's end and its log line are written in one statement, and only by the
    run that owns the batch; an attempt cut short by a death writes neither. So
    an item run again after its outcome was committed leaves a second end line,
    and one re-run because its attempt died (at-least-once) does not.
    """
    return fetch(
        "SELECT batch_id, substring(message from '^item ([0-9]+)/')::int AS position, count(*) AS ends,"
        " string_agg(message, ' | ' ORDER BY id) AS messages"
        " FROM batch_logs WHERE message ~ :pattern GROUP BY 1, 2 HAVING count(*) > 1 ORDER BY 1, 2",
        pattern=ITEM_END,
    )


def items_rerun(batches: str = "true") -> list[Any]:
    """Items of the batches matching `batches` (SQL on `b`) that were attempted more than once.

    Expected (at-least-once) only where the batch's run was lost: `recovered`
    says whether it logged a "run lost" line.
    """
    return fetch(
        "SELECT i.batch_id, i.id, i.attempts,"
        " EXISTS (SELECT 1 FROM batch_logs l WHERE l.batch_id = i.batch_id AND l.message LIKE 'run lost%') AS recovered"
        f" FROM batch_items i JOIN batches b ON b.id = i.batch_id WHERE ({batches}) AND i.attempts > 1"
    )


def step_violations(all_ended: bool = False) -> list[str]:
    """Every rule above, as sentences; with `all_ended`, also that every batch ended `done`."""
    problems = queue_violations() + creation_order_violations()
    problems += [f"batch {r.id} started {r.started_at} before batch {r.prev_id} ended" for r in batch_overlaps()]
    problems += [
        f"batch {r.batch_id} item {r.id} started {r.started_at} while an earlier item ran" for r in item_overlaps()
    ]
    problems += [
        f"batch {r.batch_id} item {r.position} ended {r.ends} times: {r.messages}" for r in items_ended_twice()
    ]
    if all_ended:
        problems += [
            f"batch {r.id} ({r.name}) ended {r.status}"
            for r in fetch("SELECT id, name, status FROM batches WHERE status <> 'done' ORDER BY id")
        ]
    return problems
