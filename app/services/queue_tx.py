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
from datetime import datetime

from flask import current_app
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert

from app.extensions import db
from app.models import QueueState
from app.models.queue_state import QUEUE_STATE_ID
from app.services import events

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FailurePolicy:
    """What the queue does after failed batches: pause after `pause_after` of them in a row (0: never)."""

    on_failure: str  # "continue" or "pause"
    pause_after_failures: int

    @property
    def pause_after(self) -> int:
        """Failed batches in a row that pause the queue (0: never); `pause` means after the first."""
        return 1 if self.on_failure == "pause" else self.pause_after_failures


@dataclass
class Change:
    """One queue transaction: the queue's state as locked (pause, drain, policy), and what to do after commit."""

    paused: bool
    draining: bool = False
    policy: FailurePolicy = FailurePolicy("continue", 0)
    streak_from: datetime | None = None
    after_commit: list[Callable[[], None]] = field(default_factory=list)

    def publish(self, kind: str, batch_id: int | None) -> None:
        """Send a live hint once the change is committed."""
        self.after_commit.append(lambda: events.publish(kind, batch_id))


@contextmanager
def queue_change() -> Iterator[Change]:
    """Run one serialized queue transaction, then its after-commit actions."""
    change = _lock_queue()
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


# The row lock is held until commit, which serializes every queue change. The
# drain and the failure policy come in the same round trip: the promotion on the
# handoff's path reads them without a statement of its own.
LOCK_QUEUE = (
    select(
        QueueState.paused,
        QueueState.draining,
        QueueState.on_failure,
        QueueState.pause_after_failures,
        QueueState.streak_from,
    )
    .where(QueueState.id == QUEUE_STATE_ID)
    .with_for_update()
)


def ensure_state_row() -> None:
    """Make sure the queue's state row exists (checked once per app), for a lock taken without _lock_queue."""
    if not current_app.extensions.get("queue_state_row"):
        db.session.execute(insert(QueueState).values(id=QUEUE_STATE_ID, paused=False).on_conflict_do_nothing())
        current_app.extensions["queue_state_row"] = True


def _lock_queue() -> Change:
    """Take the queue lock for this transaction; return the queue's state as locked."""
    row = db.session.execute(LOCK_QUEUE).first()
    if row is None:  # a database migrated without its state row
        db.session.execute(insert(QueueState).values(id=QUEUE_STATE_ID, paused=False).on_conflict_do_nothing())
        row = db.session.execute(LOCK_QUEUE).one()
    return Change(
        paused=bool(row.paused),
        draining=bool(row.draining),
        policy=policy_of(row.on_failure, row.pause_after_failures),
        streak_from=row.streak_from,
    )


def policy_of(on_failure: str | None, pause_after_failures: int | None) -> FailurePolicy:
    """The failure policy an operator set, or where they set none, the settings'."""
    config = current_app.config
    return FailurePolicy(
        on_failure=on_failure or str(config.get("QUEUE_ON_FAILURE", "continue")),
        pause_after_failures=(
            pause_after_failures
            if pause_after_failures is not None
            else int(config.get("QUEUE_PAUSE_AFTER_FAILURES", 0))
        ),
    )
