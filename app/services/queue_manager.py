"""The queue's rules, in one place: with queue_steps.py and queue_repairs.py, the only code that
changes a batch's status or position.

What each action does to a batch in each status (409: refused with Conflict;
-: does not apply, the operation finds no such batch and changes nothing):

===========  ===========  ========  =========  ======  ============  =================  ============  =======  ======
status       promote      stop      cancel     move    end run       run lost           stalled item  resume   retry
===========  ===========  ========  =========  ======  ============  =================  ============  =======  ======
queued       in_progress  409       cancelled  queued  -             -                  -             409      409
in_progress  -            stopping  409        409     done, failed  in_progress, failed in_progress   409      409
stopping     -            409       409        409     stopped       stopped            stopping      409      409
stopped      -            409       409        409     -             -                  -             queued   409
failed       -            409       409        409     -             -                  -             409      failed
done,        -            409       409        409     -             -                  -             409      409
cancelled
===========  ===========  ========  =========  ======  ============  =================  ============  =======  ======

- enqueue creates a batch queued at the end, then promotes (only if nothing
  ran and the queue was not paused: a running batch's end promotes the head
  itself); without an Idempotency-Key to look up, the lock, the creation and
  the commit are one round trip (queue_create.py); start un-pauses
  the queue and cancels a drain (409 while a batch runs, unless it only
  cancels a drain), then promotes.
- resume: a stopped batch is queued again with its pending items, at the end
  or at a position, as if new (its run's times and error cleared), then
  promotes. retry: a failed batch stays failed; a new batch of its failed
  items is enqueued, `retry_of` naming it (409 when none failed).
- drain pauses the queue when the running batch ends (at once if none runs).
  The pause is taken by the promotion that the run's end chains, in the
  statement that would otherwise promote (queue_statements.PAUSE_DRAINED), so
  a drain is never left set beside a promoted batch. The failure policy's
  pause is taken the same way (PROMOTE_HEAD_UNLESS_FAILING), only while a
  policy is set: the handoff's path is unchanged when it is not.
- promote starts the head (lowest rank) only if nothing runs and the queue
  isn't paused; stop pauses the queue until start.
- end run: stopped after a stop; done when every item succeeded and the run
  reported no error; failed otherwise (queue_statements.END_RUN).
- run lost (recovery): the run again under a new token, or failed after
  MAX_RUN_ATTEMPTS runs began; a stopping batch is stopped.
- stalled item: the item fails and the run is sent again under a new token.
  These two are the repairs (queue_repairs.py): the rounds every worker and
  beat run, a run task's failure, a run's own watcher call them.

Each column is a row of RULES. Every change of a batch locked in the session
goes through `transition`, which refuses a status the rule doesn't start from
and sets the batch's new status. Promotion, a run's end and a stalled run's
restart are single statements on the handoff's path, which find their batch
themselves (queue_statements.py): their status names are bound from
BatchStatus, and tests/services/test_queue_statements.py checks that they are
the statuses of their rows. Adding an operation is a new Action, its row in
RULES and in the table above, and a function here that locks the batch inside
`queue_change()` and calls `transition`. The steps the operations share
(promote the head, end the run, pause, log a line) are in queue_steps.py.

Every queue change is one transaction under the queue lock (queue_tx.py). A
run's own end is the one change that skips it, because it lies between two
batches and only ever frees the running slot: it is one statement that locks
its batch's row, which every change touching the running batch locks too
(after the queue row, so there is no cycle to deadlock on). A promotion that
misses a slot freed at the same moment starts nothing, and the end's own
chained promotion follows. The database backs the rules up: a partial unique
index refuses a second running batch and a deferred unique constraint refuses
a duplicated position. The order is each queued batch's rank (queue_ranks.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Connection, select, text, update

from app.errors import Conflict
from app.extensions import db
from app.models import RUNNING_STATUSES, Batch, BatchItem, BatchStatus, ItemStatus, QueueState
from app.models._types import utcnow
from app.models.batches import RUNNING_SLOT
from app.models.queue_state import QUEUE_STATE_ID
from app.services import events, leases, queue_create, queue_ranks, queue_statements
from app.services.queue_statements import NO_ITEM, ItemWrite
from app.services.queue_steps import add_log, end_run, locked_batch, promote_head, set_draining, set_paused
from app.services.queue_tx import Change, FailurePolicy, policy_of, queue_change

log = logging.getLogger(__name__)


class Action(StrEnum):
    """What can happen to a batch: the columns of the module's table."""

    PROMOTE = "promote"
    STOP = "stop"
    CANCEL = "cancel"
    MOVE = "move"
    END_RUN = "end run"
    RELAUNCH = "relaunch"  # a lost or stalled run sent again under a new token
    RESUME = "resume"
    RETRY = "retry"  # the failed batch stays as it is; a new batch runs its failed items


@dataclass(frozen=True)
class Rule:
    """Which statuses an action applies to, and which it leads to (none: the status stays)."""

    sources: tuple[BatchStatus, ...]
    targets: tuple[BatchStatus, ...]
    refusal: str  # the Conflict's reason, for a batch in any other status


S = BatchStatus
RULES: dict[Action, Rule] = {
    Action.PROMOTE: Rule((S.QUEUED,), (S.IN_PROGRESS,), "only a queued batch can start"),
    Action.STOP: Rule((S.IN_PROGRESS,), (S.STOPPING,), "only a batch in progress can be stopped"),
    Action.CANCEL: Rule((S.QUEUED,), (S.CANCELLED,), "only a queued batch can be cancelled"),
    Action.MOVE: Rule((S.QUEUED,), (), "only a queued batch can be moved"),
    Action.END_RUN: Rule(RUNNING_STATUSES, (S.DONE, S.FAILED, S.STOPPED), "only a running batch can end"),
    Action.RELAUNCH: Rule(RUNNING_STATUSES, (), "only a running batch can be run again"),
    Action.RESUME: Rule((S.STOPPED,), (S.QUEUED,), "only a stopped batch can be resumed"),
    Action.RETRY: Rule((S.FAILED,), (), "only a failed batch can be retried"),
}

# A retry's name: the original's, marked, within the 200 characters of a name.
RETRY_SUFFIX = " (retry)"
MAX_NAME = 200


def transition(batch: Batch, action: Action) -> None:
    """Apply an action's rule to a batch locked in this transaction: refuse it, or set its one new status."""
    rule = RULES[action]
    if batch.status not in rule.sources:
        raise Conflict(f"batch {batch.id} is {batch.status}; {rule.refusal}")
    if len(rule.targets) == 1:
        batch.status = rule.targets[0].value


@dataclass
class NewBatch:
    """A validated creation request."""

    name: str
    processor: str
    parameters: dict[str, Any]
    profile_ids: list[int]
    # Seconds each item may run; the contract's default, for callers that don't
    # resolve the effective limit as batches.create_batch does.
    item_timeout: float = 3600.0
    created_by: str | None = None
    idempotency_key: str | None = None
    request_digest: str | None = None
    retry_of: int | None = None
    # The completion webhook and the token whose secret signs it.
    callback_url: str | None = None
    callback_token_id: int | None = None


@dataclass
class QueueSnapshot:
    """What GET /queue reports."""

    paused: bool
    paused_by: str | None
    paused_at: datetime | None
    running: Batch | None
    queued_count: int
    paused_reason: str | None = None
    draining: bool = False
    drain_by: str | None = None
    drain_at: datetime | None = None

    @property
    def start_enabled(self) -> bool:
        """Start does something useful whenever nothing runs.

        Paused, it resumes the queue; empty, it leads to the creation form; not
        paused with a head that waits (its promotion was lost), it promotes it.
        """
        return self.running is None


# --- reads -------------------------------------------------------------------


def get_running_batch() -> Batch | None:
    """Return the batch holding the running slot, if any."""
    return db.session.scalar(select(Batch).where(text(RUNNING_SLOT)))


def get_next_position() -> int:
    """Return the position a batch joining the end of the queue gets."""
    return queue_ranks.queued_count() + 1


def snapshot() -> QueueSnapshot:
    """Read the queue's state as GET /queue shows it."""
    state = db.session.get(QueueState, QUEUE_STATE_ID) or QueueState(paused=False)
    paused = bool(state.paused)
    return QueueSnapshot(
        paused=paused,
        paused_by=state.paused_by,
        paused_at=state.paused_at,
        running=get_running_batch(),
        queued_count=queue_ranks.queued_count(),
        paused_reason=state.paused_reason if paused else None,
        draining=bool(state.draining),
        drain_by=state.drain_by,
        drain_at=state.drain_at,
    )


def failure_policy() -> FailurePolicy:
    """The failure policy in force: an operator's, or the settings'."""
    state = db.session.get(QueueState, QUEUE_STATE_ID)
    return policy_of(state.on_failure if state else None, state.pause_after_failures if state else None)


# --- the operations ------------------------------------------------------------


def enqueue(new: NewBatch) -> tuple[Batch, bool]:
    """Add a batch at the end of the queue and start it if the slot is free.

    Returns the batch and whether it was created; a repeated Idempotency-Key
    with the same body returns the earlier batch instead.
    """
    if not new.idempotency_key:
        return _enqueue_at_once(new), True
    with queue_change() as change:
        earlier = db.session.scalar(select(Batch).where(Batch.idempotency_key == new.idempotency_key))
        if earlier is not None:
            if earlier.request_digest != new.request_digest:
                raise Conflict("this Idempotency-Key was used with another request body")
            return earlier, False
        created, promoted = _add_batch(change, new)
    return _created_batch(created, promoted), True


def _enqueue_at_once(new: NewBatch) -> Batch:
    """Queue a batch that has no earlier one to look for: lock, write and commit in one round trip.

    The promotion it may need comes after, as a queue change of its own: only
    when the queue was neither paused nor running a batch, so not on a busy
    queue's path. Meanwhile the batch waits as if a promotion had just missed
    it (the module docstring): the one that follows starts the head.
    """
    created, paused = queue_create.commit_new_batch(new, utcnow())
    events.publish("created", created.id)
    if paused or created.busy:
        return queue_create.loaded_batch(created)
    with queue_change() as change:  # not a handoff: nothing ended before it (unlike promote_next_batch)
        promote_head(change)
    # Read again whatever that promotion did: it started this batch or the one ahead, or found the
    # slot just taken by a run's own chained promotion, which may have started this one.
    batch = db.session.get(Batch, created.id)
    assert batch is not None  # committed just now, and only a queue change could remove it
    return batch


def _add_batch(change: Change, new: NewBatch) -> tuple[queue_create.Created, int | None]:
    """Queue a new batch at the end, with its items and log line, and promote; return it and what was promoted.

    One statement writes the batch (queue_create.py); the promotion follows
    only when no batch was running, since a running batch's end promotes the
    head itself once this change is committed.
    """
    created = queue_create.insert_batch(new, utcnow())
    if created is None:  # _lock_queue made sure the row is there
        raise RuntimeError("the queue's state row is missing: no batch was created")
    change.publish("created", created.id)
    promoted = None if created.busy else promote_head(change)
    return created, promoted


def _created_batch(created: queue_create.Created, promoted: int | None) -> Batch:
    """The new batch after its change committed: as written, or read again if its creation promoted a batch.

    A promotion changes the batch's status or, promoting the one ahead, its position.
    """
    if promoted is not None:
        batch = db.session.get(Batch, created.id)
        assert batch is not None  # committed just now, and only a queue change could remove it
        return batch
    return queue_create.loaded_batch(created)


def promote_next_batch() -> int | None:
    """Start the head of the queue if nothing runs and the queue isn't paused; return its id.

    Idempotent: called twice, or from many workers at once, it starts at most
    one batch, because the queue lock serializes the callers and the second
    finds the slot taken. It returns the id rather than the row: it runs
    between two batches, while the new run starts beside it on two cores.
    """
    with queue_change() as change:
        return promote_head(change, handoff=True)


def finish_run(
    connection: Connection, batch_id: int, token: str, error: str | None = None, last_item: ItemWrite = NO_ITEM
) -> BatchStatus | None:
    """Record the end of a run: done, failed or (after a stop) stopped; return the new status.

    One statement on the run's own autocommit connection, with the run's
    last item written in it, which also gives back the run's lease, held on
    that connection, whatever the outcome. Fenced by the dispatch token: a run
    that was presumed lost and replaced changes nothing (None). No queue lock,
    because a run's end only frees the running slot (see the module
    docstring), and no promotion here: the run task's success or failure
    signal chains it.
    """
    parameters = queue_statements.end_run_parameters(batch_id, error, token, last_item, release_lease=True)
    status = connection.execute(queue_statements.END_RUN, parameters).scalar()
    if status is None:
        return None
    events.publish("finished", batch_id)
    return BatchStatus(status)


def stop(batch_id: int, actor: str) -> Batch:
    """Ask the running batch to stop and pause the queue until Start."""
    with queue_change() as change:
        batch = locked_batch(batch_id)
        transition(batch, Action.STOP)
        batch.stop_requested_at = utcnow()
        batch.stop_requested_by = actor
        set_paused(change, True, actor, "stopped")
        add_log(batch.id, f"stop requested by {actor}")
        db.session.flush()
        if not leases.is_held(batch.id):
            # No run holds the batch (not picked up yet, or its worker died):
            # nothing can be interrupted, so it is stopped at once.
            end_run(change, batch.id, None)
        change.publish("stopping", batch.id)
    db.session.refresh(batch)
    return batch


def cancel(batch_id: int, actor: str) -> Batch:
    """Remove a queued batch from the queue; the batches behind it move up."""
    with queue_change() as change:
        batch = locked_batch(batch_id, with_position=False)
        transition(batch, Action.CANCEL)
        batch.queue_rank = None
        batch.finished_at = utcnow()
        add_log(batch.id, f"cancelled by {actor}")
        change.publish("cancelled", batch.id)
    return batch


def move(batch_id: int, position: int, actor: str) -> Batch:
    """Put a queued batch at a position (1-based; past the end means last)."""
    return _move(batch_id, lambda current: position, actor)


def move_by(batch_id: int, steps: int, actor: str) -> Batch:
    """Move a queued batch `steps` places towards the end (negative: the front), from where it is now.

    The table's up and down controls: counted under the queue lock, so two
    clicks at once move the batch two places, not one.
    """
    return _move(batch_id, lambda current: current + steps, actor)


def _move(batch_id: int, target_of: Callable[[int], int], actor: str) -> Batch:
    with queue_change() as change:
        batch = locked_batch(batch_id)
        transition(batch, Action.MOVE)
        current = batch.queue_position or 1  # a queued batch always has one
        target = max(1, min(target_of(current), queue_ranks.queued_count()))
        if target != current:
            batch.queue_rank = queue_ranks.rank_for(batch.id, target)
            add_log(batch.id, f"moved from #{current} to #{target} by {actor}")
            change.publish("moved", batch.id)
    return batch


def start(actor: str) -> QueueSnapshot:
    """Un-pause the queue and promote its head; while a batch runs, only cancel a drain (else refused)."""
    with queue_change() as change:
        running = get_running_batch()
        if running is not None:
            if not change.draining:
                raise Conflict(f"batch {running.id} is running; Start is allowed only when nothing runs")
            set_draining(change, None)
            add_log(running.id, f"drain cancelled by {actor}")
            log.info("queue: drain cancelled by %s", actor)
        else:
            set_paused(change, False, None)
            promoted = promote_head(change)
            if promoted is not None:
                add_log(promoted, f"queue started by {actor}")
        change.publish("queue", None)
    return snapshot()


def drain(actor: str) -> QueueSnapshot:
    """Pause the queue once the running batch ends ("pause after this batch"); at once if none runs.

    A paused queue stays as it is: nothing will start anyway. The running
    batch is read under the queue lock, so a run ending meanwhile either
    ended before (nothing runs: the queue pauses now) or its chained
    promotion, which waits for this lock, finds the drain and pauses instead.
    """
    with queue_change() as change:
        if change.paused:
            return snapshot()
        running = get_running_batch()
        if running is None:
            set_paused(change, True, actor, "drained")
        else:
            set_draining(change, actor)
            add_log(running.id, f"drain requested by {actor}: the queue pauses when this batch ends")
        log.info("queue: drain requested by %s", actor)
        change.publish("queue", None)
    return snapshot()


def resume(batch_id: int, actor: str, position: int | None = None) -> Batch:
    """Queue a stopped batch again with its pending items: at the end, or at `position` (1-based)."""
    with queue_change() as change:
        batch = locked_batch(batch_id)
        transition(batch, Action.RESUME)
        with db.session.no_autoflush:  # queued without a rank yet: the database would refuse the row
            queued = queue_ranks.queued_count()
            if position is None or position > queued:
                batch.queue_rank = queue_ranks.rank_at_end()
            else:
                batch.queue_rank = queue_ranks.rank_for(batch.id, max(1, position))
        # Queued as if new: started_at is when it becomes in_progress again.
        batch.started_at = batch.finished_at = batch.error = None
        batch.stop_requested_at = batch.stop_requested_by = batch.lost_at = None
        batch.run_attempts = 0
        db.session.flush()
        db.session.refresh(batch, ["queue_position"])
        add_log(batch.id, f"resumed by {actor} at #{batch.queue_position} with {batch.pending_items} pending items")
        change.publish("resumed", batch.id)
        promote_head(change)
    db.session.refresh(batch)
    return batch


def retry(batch_id: int, actor: str) -> Batch:
    """Enqueue a new batch of a failed batch's failed items: same processor and parameters, `retry_of` set."""
    with queue_change() as change:
        original = locked_batch(batch_id)
        transition(original, Action.RETRY)
        failed = list(
            db.session.scalars(
                select(BatchItem.profile_id)
                .where(BatchItem.batch_id == original.id, BatchItem.status == ItemStatus.FAILED.value)
                .order_by(BatchItem.position)
            )
        )
        if not failed:
            raise Conflict(f"batch {original.id} has no failed items to retry")
        name = original.name[: MAX_NAME - len(RETRY_SUFFIX)] + RETRY_SUFFIX
        new = NewBatch(
            name=name,
            processor=original.processor,
            parameters=dict(original.parameters or {}),
            profile_ids=failed,
            item_timeout=original.item_timeout,
            created_by=actor,
            retry_of=original.id,
        )
        created, promoted = _add_batch(change, new)
        add_log(original.id, f"retried by {actor} as batch {created.id} ({len(failed)} failed items)")
    return _created_batch(created, promoted)


def set_failure_policy(policy: FailurePolicy, actor: str) -> FailurePolicy:
    """Change the failure policy at run time; failures in a row are counted afresh from now."""
    with queue_change() as change:
        db.session.execute(
            update(QueueState)
            .where(QueueState.id == QUEUE_STATE_ID)
            .values(
                on_failure=policy.on_failure,
                pause_after_failures=policy.pause_after_failures,
                streak_from=utcnow(),
            )
        )
        log.info(
            "queue: failure policy set by %s: on failure %s, pause after %d failed in a row",
            actor,
            policy.on_failure,
            policy.pause_after_failures,
        )
        change.publish("policy", None)
    return failure_policy()
