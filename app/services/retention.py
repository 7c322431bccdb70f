"""Retention: delete old finished batches, with their items, logs and webhook records, in short chunks.

A purge never takes the queue lock (the queue_state row every queue change locks, app/services/queue_tx.py)
and never touches a batch that waits or runs: it deletes only batches in a terminal status, so the queue's
rules have nothing to say about it, and enqueues, moves and promotions go on beside it. Each chunk is its own
transaction of one statement: the rows it holds are locked for milliseconds, never for the whole purge, and a
purge stopped halfway leaves whole batches behind, never half of one.

Who calls it: `flask batches purge` (app/retention_cli.py), and the repair rounds of every worker and beat when
RETENTION_DAYS is set (workers/liveness.py, through `Schedule`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, literal, select, text

from app import metrics
from app.extensions import db
from app.models.batches import RUNNING_STATUSES, TERMINAL_STATUSES, BatchStatus, sql_list

log = logging.getLogger(__name__)

DEFAULT_CHUNK = 1_000


# The batches a purge may delete: finished before the cutoff, and
# - not with a completion webhook still being sent (delivery neither delivered nor given up): its sender reads
#   the batch; the batch goes on a later purge, once its delivery has ended;
# - not named by a waiting or running retry (`retry_of`): deleting it would set that batch's retry_of to NULL,
#   writing a row that the queue manager locks, so a purge would wait on the queue and the queue on the purge.
_DOOMED = f"""
    SELECT b.id FROM batches b
    WHERE b.status IN ({sql_list(TERMINAL_STATUSES)})
      AND b.finished_at < :before
      AND NOT EXISTS (
          SELECT 1 FROM callback_deliveries d
          WHERE d.batch_id = b.id AND d.delivered_at IS NULL AND d.gave_up_at IS NULL)
      AND NOT EXISTS (
          SELECT 1 FROM batches r
          WHERE r.retry_of = b.id AND r.status IN ({sql_list((BatchStatus.QUEUED, *RUNNING_STATUSES))}))
"""

# One chunk, one statement: lock the oldest `chunk` doomed batches (SKIP LOCKED: a batch some other transaction
# holds, a resume or a retry of it, or another process's purge, is left for later instead of waited for), then
# delete their rows. The children are deleted here rather than by the foreign keys' ON DELETE CASCADE (which
# then find nothing) so that the statement can count them; the doomed set is materialized once (FOR UPDATE).
PURGE_CHUNK = text(
    f"""
    WITH doomed AS ({_DOOMED}
        ORDER BY b.finished_at
        LIMIT :chunk
        FOR UPDATE OF b SKIP LOCKED
    ), items AS (
        DELETE FROM batch_items WHERE batch_id IN (SELECT id FROM doomed) RETURNING 1
    ), logs AS (
        DELETE FROM batch_logs WHERE batch_id IN (SELECT id FROM doomed) RETURNING 1
    ), attempts AS (
        DELETE FROM callback_attempts WHERE batch_id IN (SELECT id FROM doomed) RETURNING 1
    ), deliveries AS (
        DELETE FROM callback_deliveries WHERE batch_id IN (SELECT id FROM doomed) RETURNING 1
    ), gone AS (
        DELETE FROM batches WHERE id IN (SELECT id FROM doomed) RETURNING 1
    )
    SELECT (SELECT count(*) FROM gone) AS batches, (SELECT count(*) FROM items) AS items,
           (SELECT count(*) FROM logs) AS logs, (SELECT count(*) FROM attempts) AS attempts
    """
)

# What a purge would delete now, counted without locking or deleting anything (--dry-run).
_COUNT = text(
    f"""
    WITH doomed AS MATERIALIZED ({_DOOMED})
    SELECT (SELECT count(*) FROM doomed) AS batches,
           (SELECT count(*) FROM batch_items WHERE batch_id IN (SELECT id FROM doomed)) AS items,
           (SELECT count(*) FROM batch_logs WHERE batch_id IN (SELECT id FROM doomed)) AS logs,
           (SELECT count(*) FROM callback_attempts WHERE batch_id IN (SELECT id FROM doomed)) AS attempts
    """
)


@dataclass(frozen=True)
class PurgeResult:
    """What a purge deleted (or, a dry run, would delete): rows, chunks, and how long it took."""

    batches: int = 0
    items: int = 0
    logs: int = 0
    webhook_attempts: int = 0
    chunks: int = 0
    seconds: float = 0.0
    before: datetime | None = None
    dry_run: bool = False
    # A purge that stopped at its `max_chunks` with batches left to delete.
    more: bool = False

    def as_dict(self) -> dict[str, Any]:
        """The result as JSON-ready values (the CLI's --json)."""
        values = asdict(self)
        values["seconds"] = round(self.seconds, 3)
        values["before"] = self.before.isoformat() if self.before else None
        return values


def cutoff(age: timedelta) -> datetime:
    """That long before now, on the database's clock (the clock `finished_at` is compared with)."""
    value: datetime = db.session.execute(select(func.now() - literal(age))).scalar_one()
    db.session.rollback()
    return value


def purge(
    before: datetime,
    chunk: int = DEFAULT_CHUNK,
    dry_run: bool = False,
    max_chunks: int | None = None,
    on_chunk: Callable[[PurgeResult], None] | None = None,
) -> PurgeResult:
    """Delete finished batches that finished before `before`, oldest first, `chunk` batches a transaction.

    `on_chunk` hears the running totals after each committed chunk. With `max_chunks` the purge stops there
    (`more` says whether batches were left). A dry run only counts.
    """
    if chunk < 1:
        raise ValueError("chunk must be at least 1")
    started = time.perf_counter()
    if dry_run:
        row = db.session.execute(_COUNT, {"before": before}).one()
        db.session.rollback()
        chunks = -(-row.batches // chunk)
        return PurgeResult(
            row.batches, row.items, row.logs, row.attempts, chunks, time.perf_counter() - started, before, True
        )
    total = PurgeResult(before=before)
    while max_chunks is None or total.chunks < max_chunks:
        row = _purge_chunk(before, chunk)
        total = replace(
            total,
            batches=total.batches + row.batches,
            items=total.items + row.items,
            logs=total.logs + row.logs,
            webhook_attempts=total.webhook_attempts + row.attempts,
            chunks=total.chunks + (1 if row.batches else 0),
            seconds=time.perf_counter() - started,
        )
        if row.batches and on_chunk is not None:
            on_chunk(total)
        # SKIP LOCKED still fills the LIMIT from the batches behind a locked one: a short chunk was the last.
        if row.batches < chunk:
            return total
    return replace(total, more=True)


def _purge_chunk(before: datetime, chunk: int) -> Any:
    """Run one chunk in a transaction of its own and commit it; its counts."""
    try:
        row = db.session.execute(PURGE_CHUNK, {"before": before, "chunk": chunk}).one()
        db.session.commit()
    except BaseException:
        db.session.rollback()
        raise
    if row.batches:
        metrics.record_purge(row.batches)
    return row


class Schedule:
    """The reconciler's purge: at most once an hour in this process, a bounded number of chunks a round.

    Every worker and beat runs repair rounds every few seconds; a purge of batches finished days ago needs no
    such promptness, so each process purges once an hour (retention is in days: an hour late is nothing). A
    cluster-wide "purged at" stamp would need a row every process writes, and the one they share, queue_state,
    is the queue lock, which a purge must not take; several processes purging at once split the batches
    between them (SKIP LOCKED) or find nothing. A round purges at most `chunks_per_round` chunks, so a large
    backlog (retention just switched on) never holds up this process's repair rounds for long: while batches
    are left, the next round goes on.
    """

    def __init__(
        self, days: int, every: float = 3600.0, chunks_per_round: int = 10, chunk: int = DEFAULT_CHUNK
    ) -> None:
        self.days = days
        self.every = every
        self.chunks_per_round = chunks_per_round
        self.chunk = chunk
        self._due = 0.0  # monotonic; the first round after start purges

    def run_if_due(self) -> PurgeResult | None:
        """Purge if this process's hour has come (inside an app context); what was deleted, or None."""
        if not self.days or time.monotonic() < self._due:
            return None
        result = purge(cutoff(timedelta(days=self.days)), chunk=self.chunk, max_chunks=self.chunks_per_round)
        self._due = time.monotonic() + (0.0 if result.more else self.every)
        if result.batches:
            log.info(
                "retention: deleted %d batches finished before %s (%d items, %d log lines) in %d chunks, %.1f s%s",
                result.batches,
                result.before.isoformat() if result.before else "-",
                result.items,
                result.logs,
                result.chunks,
                result.seconds,
                "; more left for the next round" if result.more else "",
            )
        return result
