"""The steps queue changes are made of, each called inside `queue_change()` (queue_tx.py).

The operations (queue_manager.py) and the repairs (queue_repairs.py) are
sequences of these: promote the head, end the running batch, send a run
again, pause or drain the queue, lock a batch, log a line. None of them
takes the queue lock or commits; each leaves what must wait for the commit
(a dispatch, a live hint, a metric) on the change's after-commit list.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import defer

from app import metrics
from app.errors import NotFound
from app.extensions import db
from app.models import Batch, BatchLog, QueueState
from app.models._types import utcnow
from app.models.queue_state import QUEUE_STATE_ID
from app.services import dispatch, queue_statements, storable_id
from app.services.queue_tx import Change

log = logging.getLogger(__name__)


def promote_head(change: Change, handoff: bool = False) -> int | None:
    """Start the head of the queue if the slot is free; return its id.

    A drain or the failure policy may pause the queue here instead (see
    queue_manager's docstring); without either, this is PROMOTE_HEAD alone. `handoff`:
    this promotion is the queue moving on by itself after a run's end (the
    chained promotion, a recovery's, a repair round's), not an operator's
    Start or a new batch, so its gap since the last end is a handoff.
    """
    if change.paused:
        return None
    now = utcnow()
    if change.draining:
        drained = {"now": now, "queue_id": QUEUE_STATE_ID}
        drained_by = db.session.execute(queue_statements.PAUSE_DRAINED, drained).first()
        if drained_by is not None:
            change.paused, change.draining = True, False
            log.info("queue: drained; paused as asked by %s", drained_by[0])
            change.publish("queue", None)
        return None
    token = uuid.uuid4().hex
    parameters = {"now": now, "token": token}
    row: Any  # the promotion's row: the batch promoted (or None) and its times
    if change.policy.pause_after:
        parameters |= {
            "queue_id": QUEUE_STATE_ID,
            "pause_after": change.policy.pause_after,
            "streak_from": change.streak_from,
        }
        row = db.session.execute(queue_statements.PROMOTE_HEAD_UNLESS_FAILING, parameters).one()
        if row.paused_after is not None:
            change.paused = True
            log.warning("queue: paused after %d failed batches in a row (failure policy)", row.paused_after)
            change.publish("queue", None)
    else:
        row = db.session.execute(queue_statements.PROMOTE_HEAD, parameters).first()
    promoted: int | None = None if row is None else row.promoted
    if row is None or promoted is None:
        return None
    change.after_commit.append(lambda: dispatch.send_run(promoted, token))
    change.after_commit.append(
        lambda: observe_promotion(row.started_at, row.created_at, row.previous_finished_at, handoff)
    )
    change.publish("promoted", promoted)
    return promoted


def observe_promotion(started: datetime, created: datetime, previous_end: datetime | None, handoff: bool) -> None:
    """Time the promotion in the metrics, once it is committed: the time queued, and the handoff if it was one.

    A handoff only when the batch was already waiting as the previous one ended;
    a batch created into an idle queue had no predecessor to hand off from.
    """
    metrics.TIME_QUEUED.observe(max(0.0, (started - created).total_seconds()))
    if handoff and previous_end is not None and created <= previous_end <= started:
        metrics.HANDOFF.observe((started - previous_end).total_seconds())


def end_run(change: Change, batch_id: int, error: str | None) -> str | None:
    """End the running batch in this queue transaction; return its new status (None if none runs)."""
    status = db.session.execute(queue_statements.END_RUN, queue_statements.end_run_parameters(batch_id, error)).scalar()
    if status is not None:
        change.publish("finished", batch_id)
    return status


def set_paused(change: Change, paused: bool, actor: str | None, reason: str | None = None) -> None:
    """Pause (saying who and why) or un-pause the queue; either way a drain is over.

    Un-pausing also counts failures in a row afresh, so the failure policy
    doesn't pause again at once for the failures that paused it.
    """
    change.paused, change.draining = paused, False
    now = utcnow()
    values: dict[str, Any] = {
        "paused": paused,
        "paused_by": actor,
        "paused_at": now if paused else None,
        "paused_reason": reason if paused else None,
        "draining": False,
        "drain_by": None,
        "drain_at": None,
    }
    if not paused:
        values["streak_from"] = now
    db.session.execute(update(QueueState).where(QueueState.id == QUEUE_STATE_ID).values(**values))


def set_draining(change: Change, actor: str | None) -> None:
    """Ask for the queue to pause when the running batch ends (actor), or cancel that (None)."""
    change.draining = actor is not None
    db.session.execute(
        update(QueueState)
        .where(QueueState.id == QUEUE_STATE_ID)
        .values(draining=change.draining, drain_by=actor, drain_at=utcnow() if actor else None)
    )


def locked_batch(batch_id: int, with_position: bool = True) -> Batch:
    """The batch, its row locked. Without its position when the change has no use for it: a queued
    batch's position counts the ranks ahead of it (10 ms of a cancel at 100,000 queued)."""
    batch = None
    if storable_id(batch_id):
        # populate_existing: the row as locked, not as this session may have seen it before.
        locked = select(Batch).where(Batch.id == batch_id).with_for_update().execution_options(populate_existing=True)
        if not with_position:
            locked = locked.options(defer(Batch.queue_position))
        batch = db.session.scalar(locked)
    if batch is None:
        raise NotFound(f"batch {batch_id} does not exist")
    return batch


def add_log(batch_id: int, message: str, level: str = "info") -> None:
    # Stamped now, not at flush: a later statement of the same change may write
    # its own line with a time taken before this flush, and logs read oldest first.
    db.session.add(BatchLog(batch_id=batch_id, message=message, level=level, at=utcnow()))
