"""The queue's transaction: the queue lock first, side effects only after commit.

Every queue change is one transaction that starts by locking the single
queue_state row, so enqueue, promote, stop, cancel, move, start and recovery
are serialized against each other, and the pause each of them reads is the
current one. Side effects (dispatching a run, publishing a live hint) happen
only after the transaction commits, so a worker never looks for a row it can't
see yet.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert

from app.extensions import db
from app.models import QueueState
from app.models.queue_state import QUEUE_STATE_ID
from app.services import events

log = logging.getLogger(__name__)


@dataclass
class Change:
    """One queue transaction: whether the queue is paused, and what to do after commit."""

    paused: bool
    after_commit: list[Callable[[], None]] = field(default_factory=list)

    def publish(self, kind: str, batch_id: int | None) -> None:
        """Send a live hint once the change is committed."""
        self.after_commit.append(lambda: events.publish(kind, batch_id))


@contextmanager
def queue_change() -> Iterator[Change]:
    """Run one serialized queue transaction, then its after-commit actions."""
    change = Change(paused=_lock_queue())
    try:
        yield change
        db.session.commit()
    except BaseException:
        db.session.rollback()
        raise
    for action in change.after_commit:
        try:
            action()
        except Exception:  # the change is committed; a lost dispatch is the reconciler's to repair
            log.exception("an after-commit action failed (broker unreachable?); the reconciler will repair it")


# The row lock is held until commit, which serializes every queue change.
_LOCK_QUEUE = select(QueueState.paused).where(QueueState.id == QUEUE_STATE_ID).with_for_update()


def _lock_queue() -> bool:
    """Take the queue lock for this transaction; return whether the queue is paused."""
    paused = db.session.execute(_LOCK_QUEUE).scalar()
    if paused is None:  # a database migrated without its state row
        db.session.execute(insert(QueueState).values(id=QUEUE_STATE_ID, paused=False).on_conflict_do_nothing())
        paused = db.session.execute(_LOCK_QUEUE).scalar()
    return bool(paused)
