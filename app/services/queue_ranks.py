"""The queue's order: a sparse rank per queued batch, and the arithmetic that keeps room between ranks.

Positions are derived from ranks (see app/models/batches.py), so promoting,
cancelling and moving change one row, however long the queue. A move takes a
free rank between its new neighbours; when two neighbours leave no room, the
few batches behind the spot are spread out, or, past RESPACE_WINDOW, the whole
queue is renumbered in one statement. Always called inside a queue change
(app/services/queue_tx.py), whose lock keeps the ranks still meanwhile.
"""

from __future__ import annotations

from sqlalchemy import func, select, text, update

from app.extensions import db
from app.models import Batch, BatchStatus
from app.services import status_counts

# Space between the ranks of consecutive batches: room for 32 moves between the
# same two neighbours before the ranks around them must be spread out again.
RANK_GAP = 1 << 32

# How many batches after a full spot a move may re-rank before it renumbers the
# whole queue instead (one statement, and only when a long run of ranks is dense).
RESPACE_WINDOW = 64

# The last resort when a long run of ranks is dense: spread the whole queue out.
_RENUMBER = text(
    """
    UPDATE batches b SET queue_rank = ordered.place * :gap
    FROM (SELECT id, row_number() OVER (ORDER BY queue_rank) AS place
          FROM batches WHERE queue_rank IS NOT NULL) ordered
    WHERE b.id = ordered.id
    """
)


def queued_count() -> int:
    """How many batches are queued: the count the database keeps, not one index entry per queued batch read."""
    return status_counts.count(BatchStatus.QUEUED.value)


def rank_at_end() -> int:
    """The rank of a batch joining the end of the queue."""
    return (db.session.scalar(select(func.max(Batch.queue_rank))) or 0) + RANK_GAP


def rank_for(batch_id: int, target: int) -> int:
    """A free rank that puts the batch at `target` among the other queued batches."""
    for _ in range(2):
        ranks = _neighbour_ranks(batch_id, skip=max(target - 2, 0))
        if target == 1:
            return ranks[0] - RANK_GAP
        before, after = ranks[0], ranks[1] if len(ranks) > 1 else None
        if after is None:
            return before + RANK_GAP
        if after - before > 1:
            return before + (after - before) // 2
        rank = respace_after(batch_id, before)
        if rank is not None:
            return rank
        db.session.execute(_RENUMBER, {"gap": RANK_GAP})
    raise RuntimeError("no free rank after renumbering the queue")


def _neighbour_ranks(batch_id: int, skip: int) -> list[int]:
    """The ranks of the two queued batches (other than the one moving) around a place."""
    query = (
        select(Batch.queue_rank)
        .where(Batch.queue_rank.is_not(None), Batch.id != batch_id)
        .order_by(Batch.queue_rank)
        .offset(skip)
        .limit(2)
    )
    return [rank for rank in db.session.scalars(query) if rank is not None]


def respace_after(batch_id: int, before: int) -> int | None:
    """Make room right after `before` by spreading out the few batches behind it.

    Takes the shortest run of following batches whose ranks leave room for
    one more, spreads the run evenly over that room and returns the free
    rank at its front. None if no such run lies within RESPACE_WINDOW
    batches: the whole queue must be renumbered.
    """
    following = db.session.execute(
        select(Batch.id, Batch.queue_rank)
        .where(Batch.queue_rank > before, Batch.id != batch_id)
        .order_by(Batch.queue_rank)
        .limit(RESPACE_WINDOW + 1)
    ).all()
    reaches_the_end = len(following) <= RESPACE_WINDOW
    for count in range(1, len(following) + 1):
        if count < len(following):
            bound = following[count].queue_rank  # the first batch that keeps its rank
        elif reaches_the_end:
            bound = before + (count + 2) * RANK_GAP  # nothing behind the run
        else:
            return None
        # The mover takes before + step, the run before + 2 * step .. + (count + 1) * step < bound.
        step = (bound - before) // (count + 2)
        if step >= 2:
            for place, row in enumerate(following[:count], start=2):
                db.session.execute(
                    update(Batch).where(Batch.id == row.id).values(queue_rank=before + place * step),
                    execution_options={"synchronize_session": False},
                )
            return int(before + step)
    return None
