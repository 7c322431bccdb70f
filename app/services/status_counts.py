"""The batches counted by status, as the database keeps them (migration 0011).

Every change of a batch's status adds signed rows to `batch_status_changes` (triggers on `batches`),
so a status's count is the sum of its rows: a read of a few rows per status, where counting the
batches themselves read one index entry per batch (56 ms at a million, for every scrape of /metrics).

The rows grow with every change. `compact` folds them into one row per status, in one statement:
it deletes the rows its snapshot sees and inserts their sums, so the rows other transactions add
meanwhile stay as they are, and two compactions at once each fold what the other left. Every
worker's and beat's repair timer runs it after its round (workers/liveness.py); should none run,
the counts stay exact and only their reading grows slower.
"""

from __future__ import annotations

from sqlalchemy import text

from app.extensions import db

# The counts, as a subquery of the gauges' one statement (app/metrics/gauges.py).
COUNTS_BY_STATUS = "SELECT status, sum(delta) AS n FROM batch_status_changes GROUP BY status"

_COMPACT = text(
    """
    WITH folded AS (DELETE FROM batch_status_changes RETURNING status, delta)
    INSERT INTO batch_status_changes (status, delta)
    SELECT status, sum(delta) FROM folded GROUP BY status HAVING sum(delta) <> 0
    """
)


def count_of(status_parameter: str) -> str:
    """A scalar subquery: the batches in the status bound as `status_parameter`, for statements of others."""
    return f"(SELECT coalesce(sum(delta), 0) FROM batch_status_changes WHERE status = :{status_parameter})"


def count(status: str) -> int:
    """The batches in one status (in the caller's app context and transaction)."""
    return int(db.session.scalar(text(f"SELECT {count_of('status')}"), {"status": status}) or 0)


def counts() -> dict[str, int]:
    """Batches by status, the statuses with none left out (in the caller's app context and transaction)."""
    rows = db.session.execute(text(f"{COUNTS_BY_STATUS} HAVING sum(delta) <> 0")).all()
    return {status: int(n) for status, n in rows}


# Counts every batch afresh: for writes made with triggers off (session_replication_role = replica, as the
# benchmarks fill a million rows), which the triggers never saw. Not for a live queue: a change committed
# between its DELETE and its count would be counted twice.
RECOUNT = """
DELETE FROM batch_status_changes;
INSERT INTO batch_status_changes (status, delta) SELECT status, count(*) FROM batches GROUP BY status
"""


def compact() -> None:
    """Fold the rows into one per status, in a transaction of its own."""
    db.session.execute(_COMPACT)
    db.session.commit()
