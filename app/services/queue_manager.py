"""The queue's rules, in one place: the only code that changes a batch's status or position.

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

- enqueue creates a batch queued at the end, then promotes; start un-pauses
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

Each column is a row of RULES. Every change of a batch locked in the session
goes through `transition`, which refuses a status the rule doesn't start from
and sets the batch's new status. Promotion, a run's end and a stalled run's
restart are single statements on the handoff's path, which find their batch
themselves (queue_statements.py): their status names are bound from
BatchStatus, and tests/services/test_queue_statements.py checks that they are
the statuses of their rows. Adding an operation is a new Action, its row in
RULES and in the table above, and a function here that locks the batch inside
`queue_change()` and calls `transition`.

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

import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import Connection, func, insert, literal, or_, select, update

from app.errors import Conflict, NotFound
from app.extensions import db
from app.models import RUNNING_STATUSES, Batch, BatchItem, BatchLog, BatchStatus, ItemStatus, QueueState
from app.models._types import utcnow
from app.models.queue_state import QUEUE_STATE_ID
from app.services import dispatch, events, leases, liveness, queue_ranks, queue_statements, storable_id
from app.services.queue_statements import NO_ITEM, ItemWrite
from app.services.queue_tx import Change, FailurePolicy, policy_of, queue_change

log = logging.getLogger(__name__)

# Runs a batch may begin before a lost one fails it instead of being dispatched
# again (BATCH_MAX_RUN_ATTEMPTS overrides it).
MAX_RUN_ATTEMPTS = 3


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


class LeaseStillHeld(Exception):
    """A run's task failed but its lease is still held: its process is dying; look again shortly."""


# --- reads -------------------------------------------------------------------


def get_running_batch() -> Batch | None:
    """Return the batch holding the running slot, if any."""
    return db.session.scalar(select(Batch).where(Batch.status.in_(RUNNING_STATUSES)))


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
    with queue_change() as change:
        if new.idempotency_key:
            earlier = db.session.scalar(select(Batch).where(Batch.idempotency_key == new.idempotency_key))
            if earlier is not None:
                if earlier.request_digest != new.request_digest:
                    raise Conflict("this Idempotency-Key was used with another request body")
                return earlier, False
        batch = _add_batch(change, new)
    return batch, True


def _add_batch(change: Change, new: NewBatch) -> Batch:
    """Queue a new batch at the end, log its creation and promote."""
    batch = Batch(
        name=new.name,
        status=BatchStatus.QUEUED.value,
        queue_rank=queue_ranks.rank_at_end(),
        processor=new.processor,
        parameters=new.parameters,
        profile_ids=new.profile_ids,
        total_items=len(new.profile_ids),
        item_timeout=new.item_timeout,
        created_by=new.created_by,
        idempotency_key=new.idempotency_key,
        request_digest=new.request_digest,
        retry_of=new.retry_of,
    )
    db.session.add(batch)
    db.session.flush()
    db.session.execute(
        insert(BatchItem),
        [
            {"batch_id": batch.id, "position": index, "profile_id": profile_id}
            for index, profile_id in enumerate(new.profile_ids)
        ],
    )
    what = f" to retry the failed items of batch {new.retry_of}" if new.retry_of else ""
    _log(batch.id, f"created by {new.created_by or 'unknown'}{what} with {len(new.profile_ids)} profiles")
    change.publish("created", batch.id)
    _promote_head(change)
    return batch


def promote_next_batch() -> int | None:
    """Start the head of the queue if nothing runs and the queue isn't paused; return its id.

    Idempotent: called twice, or from many workers at once, it starts at most
    one batch, because the queue lock serializes the callers and the second
    finds the slot taken. It returns the id rather than the row: it runs
    between two batches, while the new run starts beside it on two cores.
    """
    with queue_change() as change:
        return _promote_head(change)


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


def restart_stalled_run(
    connection: Connection, batch_id: int, token: str, item_id: int, error: str, lines: list[dict[str, str]]
) -> str | None:
    """End a run whose processor ignored its item's time limit: fail the item and send the batch's run again.

    One statement on the run's own autocommit connection, which also gives
    back the run's lease; then, committed, the live hint and the new run,
    under the batch's new token. Fenced by the old token: a run that no longer
    owns the batch changes nothing (None). Otherwise it returns the new token;
    the old run's writes are fenced off from then on.
    """
    new_token = uuid.uuid4().hex
    parameters = {
        "id": batch_id,
        "token": token,
        "new_token": new_token,
        "item_id": item_id,
        "item_error": error,
        "lines": json.dumps(lines),
        "now": utcnow(),
        "lease_class": leases.LEASE_CLASS,
    }
    if not connection.execute(queue_statements.RESTART_STALLED_RUN, parameters).scalar():
        return None
    events.publish("item", batch_id)
    try:
        dispatch.send_run(batch_id, new_token)
    except Exception:  # committed: a lost dispatch is the reconciler's to repair
        log.exception("batch %s: could not send its run again; the reconciler will", batch_id)
    return new_token


def stop(batch_id: int, actor: str) -> Batch:
    """Ask the running batch to stop and pause the queue until Start."""
    with queue_change() as change:
        batch = _locked_batch(batch_id)
        transition(batch, Action.STOP)
        batch.stop_requested_at = utcnow()
        batch.stop_requested_by = actor
        _set_paused(change, True, actor, "stopped")
        _log(batch.id, f"stop requested by {actor}")
        db.session.flush()
        if not leases.is_held(batch.id):
            # No run holds the batch (not picked up yet, or its worker died):
            # nothing can be interrupted, so it is stopped at once.
            _end_run(change, batch.id, None)
        change.publish("stopping", batch.id)
    db.session.refresh(batch)
    return batch


def cancel(batch_id: int, actor: str) -> Batch:
    """Remove a queued batch from the queue; the batches behind it move up."""
    with queue_change() as change:
        batch = _locked_batch(batch_id)
        transition(batch, Action.CANCEL)
        batch.queue_rank = None
        batch.finished_at = utcnow()
        _log(batch.id, f"cancelled by {actor}")
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
        batch = _locked_batch(batch_id)
        transition(batch, Action.MOVE)
        current = batch.queue_position or 1  # a queued batch always has one
        target = max(1, min(target_of(current), queue_ranks.queued_count()))
        if target != current:
            batch.queue_rank = queue_ranks.rank_for(batch.id, target)
            _log(batch.id, f"moved from #{current} to #{target} by {actor}")
            change.publish("moved", batch.id)
    return batch


def start(actor: str) -> QueueSnapshot:
    """Un-pause the queue and promote its head; while a batch runs, only cancel a drain (else refused)."""
    with queue_change() as change:
        running = get_running_batch()
        if running is not None:
            if not change.draining:
                raise Conflict(f"batch {running.id} is running; Start is allowed only when nothing runs")
            _set_draining(change, None)
            _log(running.id, f"drain cancelled by {actor}")
            log.info("queue: drain cancelled by %s", actor)
        else:
            _set_paused(change, False, None)
            promoted = _promote_head(change)
            if promoted is not None:
                _log(promoted, f"queue started by {actor}")
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
            _set_paused(change, True, actor, "drained")
        else:
            _set_draining(change, actor)
            _log(running.id, f"drain requested by {actor}: the queue pauses when this batch ends")
        log.info("queue: drain requested by %s", actor)
        change.publish("queue", None)
    return snapshot()


def resume(batch_id: int, actor: str, position: int | None = None) -> Batch:
    """Queue a stopped batch again with its pending items: at the end, or at `position` (1-based)."""
    with queue_change() as change:
        batch = _locked_batch(batch_id)
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
        _log(batch.id, f"resumed by {actor} at #{batch.queue_position} with {batch.pending_items} pending items")
        change.publish("resumed", batch.id)
        _promote_head(change)
    db.session.refresh(batch)
    return batch


def retry(batch_id: int, actor: str) -> Batch:
    """Enqueue a new batch of a failed batch's failed items: same processor and parameters, `retry_of` set."""
    with queue_change() as change:
        original = _locked_batch(batch_id)
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
        batch = _add_batch(change, new)
        _log(original.id, f"retried by {actor} as batch {batch.id} ({len(failed)} failed items)")
    db.session.refresh(batch)
    return batch


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


def recover_lost_run(
    heartbeat_timeout: float, stop_grace: float, max_attempts: int = MAX_RUN_ATTEMPTS, min_gap: float = 0.0
) -> int | None:
    """Run one repair round: rescue the running batch if its run is gone, then fill a free slot.

    Returns the id of the batch it started, if any. A run is lost when no
    process holds its lease (the lease is a session advisory lock, freed
    within milliseconds of its holder's death) and either its worker is
    known to be gone (its liveness record aged out, or it restarted) or its
    heartbeat is older than the timeout. A lost run is dispatched again with a new token (the
    remaining items run; the old dispatch is fenced off), or failed after
    `max_attempts` runs began. A stopping batch whose lease is free is
    stopped at once: its run is gone, and nothing is left to wait for.

    Every worker and beat runs rounds on a timer (workers/liveness.py):
    with `min_gap`, a round is skipped when another process ran one that
    recently, and the queue lock keeps two rounds from overlapping.
    """
    if min_gap and _repaired_within(min_gap):
        return None
    with queue_change() as change:
        if not _claim_repair_round(min_gap):
            return None
        liveness.forget_long_gone()
        batch = db.session.scalar(select(Batch).where(Batch.status.in_(RUNNING_STATUSES)).with_for_update())
        if batch is not None:
            _recover(change, batch, heartbeat_timeout, stop_grace, max_attempts)
        promoted = _promote_head(change)
    if promoted is not None:  # usually it only beat the run's own promotion by a few ms
        log.info("reconciler: promoted batch %s", promoted)
    return promoted


def recover_dead_run(batch_id: int, token: str, max_attempts: int = MAX_RUN_ATTEMPTS) -> int | None:
    """Rescue a run whose task just failed (its process died, or it raised), then fill a free slot.

    Celery reported this dispatch's end, so there is no need to wait for the
    heartbeat: if the batch still carries the token and nobody holds its
    lease, the run is gone now. A lease still held belongs to the dying
    process for a moment more: LeaseStillHeld asks the caller to try again
    shortly. Anything else (a newer run, a batch that ended) is left alone.
    """
    with queue_change() as change:
        batch = db.session.scalar(
            select(Batch)
            .where(Batch.id == batch_id, Batch.status.in_(RUNNING_STATUSES), Batch.dispatch_token == token)
            .with_for_update()
        )
        if batch is not None:
            if leases.is_held(batch.id):
                raise LeaseStillHeld(f"batch {batch_id}: the failed run's lease is still held")
            _relaunch_or_end(change, batch, "its run task failed", max_attempts)
        return _promote_head(change)


# --- the operations' building blocks (always called inside queue_change) ------


def _recover(change: Change, batch: Batch, heartbeat_timeout: float, stop_grace: float, max_attempts: int) -> None:
    now = utcnow()
    if leases.is_held(batch.id):
        if (
            batch.status == BatchStatus.STOPPING
            and batch.stop_requested_at is not None
            and now - batch.stop_requested_at > timedelta(seconds=stop_grace)
            and batch.dispatch_token
        ):
            token = batch.dispatch_token
            batch.error = f"killed: did not stop within {stop_grace:g}s of the stop"
            _log(batch.id, f"did not stop within {stop_grace:g}s; terminating its process", level="warning")
            change.after_commit.append(lambda: dispatch.revoke_run(token))
        return
    if batch.status == BatchStatus.STOPPING:  # a stop found it running, and its run has ended since
        _relaunch_or_end(change, batch, "its run ended without stopping it", max_attempts)
        return
    if liveness.claimer_gone(batch.id):  # no need to wait for the heartbeat to age
        _relaunch_or_end(change, batch, "its worker is gone", max_attempts)
        return
    beat = batch.heartbeat_at or batch.started_at or now
    if now - beat < timedelta(seconds=heartbeat_timeout):
        return
    _relaunch_or_end(change, batch, "no heartbeat", max_attempts)


def _relaunch_or_end(change: Change, batch: Batch, reason: str, max_attempts: int) -> None:
    """A running batch's run is gone: stop it if it was stopping, fail it past the limit, else run it again."""
    if batch.status == BatchStatus.STOPPING:
        log.warning("batch %s: run lost (%s) while stopping; it is stopped", batch.id, reason)
        _end_run(change, batch.id, None)
    elif batch.run_attempts >= max_attempts:
        log.warning("batch %s: run lost (%s) %d times; the batch fails", batch.id, reason, batch.run_attempts)
        _end_run(change, batch.id, f"run lost {batch.run_attempts} times (worker died or unreachable)")
    else:
        log.warning("batch %s: run lost (%s); dispatching it again", batch.id, reason)
        _log(batch.id, f"run lost ({reason}); dispatching it again", level="warning")
        batch.lost_at = utcnow()
        _dispatch(change, batch)


def _promote_head(change: Change) -> int | None:
    """Start the head of the queue if the slot is free; return its id.

    A drain or the failure policy may pause the queue here instead (see the
    module docstring); without either, this is PROMOTE_HEAD alone.
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
        promoted: int | None = row.promoted
    else:
        promoted = db.session.execute(queue_statements.PROMOTE_HEAD, parameters).scalar()
    if promoted is None:
        return None
    change.after_commit.append(lambda: dispatch.send_run(promoted, token))
    change.publish("promoted", promoted)
    return promoted


def _dispatch(change: Change, batch: Batch) -> None:
    """Give a running batch a fresh fencing token and send its run again after commit."""
    transition(batch, Action.RELAUNCH)
    token = uuid.uuid4().hex
    batch.dispatch_token = token
    batch.heartbeat_at = utcnow()
    db.session.execute(
        update(BatchItem)
        .where(BatchItem.batch_id == batch.id, BatchItem.status == ItemStatus.RUNNING.value)
        .values(status=ItemStatus.PENDING.value, started_at=None),
        execution_options={"synchronize_session": False},
    )
    batch_id = batch.id
    change.after_commit.append(lambda: dispatch.send_run(batch_id, token))


def _end_run(change: Change, batch_id: int, error: str | None) -> str | None:
    """End the running batch in this queue transaction; return its new status (None if none runs)."""
    status = db.session.execute(queue_statements.END_RUN, queue_statements.end_run_parameters(batch_id, error)).scalar()
    if status is not None:
        change.publish("finished", batch_id)
    return status


def _set_paused(change: Change, paused: bool, actor: str | None, reason: str | None = None) -> None:
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


def _set_draining(change: Change, actor: str | None) -> None:
    """Ask for the queue to pause when the running batch ends (actor), or cancel that (None)."""
    change.draining = actor is not None
    db.session.execute(
        update(QueueState)
        .where(QueueState.id == QUEUE_STATE_ID)
        .values(draining=change.draining, drain_by=actor, drain_at=utcnow() if actor else None)
    )


def _locked_batch(batch_id: int) -> Batch:
    batch = None
    if storable_id(batch_id):
        # populate_existing: the row as locked, not as this session may have seen it before.
        locked = select(Batch).where(Batch.id == batch_id).with_for_update().execution_options(populate_existing=True)
        batch = db.session.scalar(locked)
    if batch is None:
        raise NotFound(f"batch {batch_id} does not exist")
    return batch


def _seconds_ago(seconds: float) -> Any:
    """That long before now, on the database's clock."""
    return func.now() - literal(timedelta(seconds=seconds))


def _claim_repair_round(gap: float) -> bool:
    """Stamp the repair round, unless another process ran one within `gap` seconds.

    The workers and beats each run rounds on a timer: one a period is enough.
    """
    claimed = db.session.execute(
        update(QueueState)
        .where(
            QueueState.id == QUEUE_STATE_ID,
            or_(QueueState.repaired_at.is_(None), QueueState.repaired_at <= _seconds_ago(gap)),
        )
        .values(repaired_at=func.now())
        .returning(QueueState.id)
    ).first()
    return claimed is not None


def _repaired_within(seconds: float) -> bool:
    """Whether some process ran a repair round in the last `seconds` (read without the lock)."""
    recent = db.session.scalar(
        select(QueueState.repaired_at > _seconds_ago(seconds)).where(QueueState.id == QUEUE_STATE_ID)
    )
    db.session.rollback()
    return bool(recent)


def _log(batch_id: int, message: str, level: str = "info") -> None:
    # Stamped now, not at flush: a later statement of the same change may write
    # its own line with a time taken before this flush, and logs read oldest first.
    db.session.add(BatchLog(batch_id=batch_id, message=message, level=level, at=utcnow()))
