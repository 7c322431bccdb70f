"""The repairs: what the queue does when a run is lost, stalls or ignores its stop.

A worker can die mid-batch (its process group killed, its host gone), a
processor can hold on past its item's time limit, and a stopping run can
ignore its stop. Each case is found by a different watcher (a run task's
failure signal, the repair rounds every worker and beat run on a timer, the
run's own watcher thread), and each ends here, under the same rules as an
operator's action (queue_manager.RULES): the run is sent again under a new
fencing token, or the batch ends, and the head is promoted if the slot is
free. Every repair is counted in `batchq_repairs_total{kind}`.
"""

from __future__ import annotations

import json
import logging
import uuid
from datetime import timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import Connection, func, literal, or_, select, text, update

from app import metrics
from app.extensions import db
from app.models import Batch, BatchItem, BatchStatus, ItemStatus, QueueState
from app.models._types import utcnow
from app.models.batches import RUNNING_SLOT
from app.models.queue_state import QUEUE_STATE_ID
from app.services import dispatch, events, leases, liveness, queue_statements
from app.services.queue_manager import Action, transition
from app.services.queue_steps import add_log, end_run, promote_head
from app.services.queue_tx import Change, queue_change

log = logging.getLogger(__name__)

# Runs a batch may begin before a lost one fails it instead of being dispatched
# again (BATCH_MAX_RUN_ATTEMPTS overrides it).
MAX_RUN_ATTEMPTS = 3


class Repair(StrEnum):
    """The repairs the metrics count (`batchq_repairs_total{kind}`), one per thing found broken and mended."""

    LOST_RUN_RELAUNCHED = "lost_run_relaunched"  # a run gone: its batch sent again under a new token
    LOST_RUN_FAILED = "lost_run_failed"  # a run lost BATCH_MAX_RUN_ATTEMPTS times: the batch fails
    LOST_RUN_STOPPED = "lost_run_stopped"  # a stopping batch whose run is gone: stopped at once
    STOP_OVERDUE_KILLED = "stop_overdue_killed"  # a run that ignored its stop past the grace: terminated
    STALLED_RUN_RESTARTED = "stalled_run_restarted"  # an item past its time limit whose processor held on
    PROMOTED = "promoted"  # a repair round started the head: its promotion was lost (or only late)


class LeaseStillHeld(Exception):
    """A run's task failed but its lease is still held: its process is dying; look again shortly."""


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
    metrics.record_repair(Repair.STALLED_RUN_RESTARTED)
    events.publish("item", batch_id)
    try:
        dispatch.send_run(batch_id, new_token)
    except Exception:  # committed: a lost dispatch is the reconciler's to repair
        log.exception("batch %s: could not send its run again; the reconciler will", batch_id)
    return new_token


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
        batch = db.session.scalar(select(Batch).where(text(RUNNING_SLOT)).with_for_update())
        if batch is not None:
            _recover(change, batch, heartbeat_timeout, stop_grace, max_attempts)
        promoted = promote_head(change, handoff=True)
    if promoted is not None:  # usually it only beat the run's own promotion by a few ms
        log.info("reconciler: promoted batch %s", promoted)
        metrics.record_repair(Repair.PROMOTED)
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
            .where(Batch.id == batch_id, text(RUNNING_SLOT), Batch.dispatch_token == token)
            .with_for_update()
        )
        if batch is not None:
            if leases.is_held(batch.id):
                raise LeaseStillHeld(f"batch {batch_id}: the failed run's lease is still held")
            _relaunch_or_end(change, batch, "its run task failed", max_attempts)
        return promote_head(change, handoff=True)


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
            add_log(batch.id, f"did not stop within {stop_grace:g}s; terminating its process", level="warning")
            change.after_commit.append(lambda: dispatch.revoke_run(token))
            change.after_commit.append(lambda: metrics.record_repair(Repair.STOP_OVERDUE_KILLED))
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
        end_run(change, batch.id, None)
        kind = Repair.LOST_RUN_STOPPED
    elif batch.run_attempts >= max_attempts:
        log.warning("batch %s: run lost (%s) %d times; the batch fails", batch.id, reason, batch.run_attempts)
        end_run(change, batch.id, f"run lost {batch.run_attempts} times (worker died or unreachable)")
        kind = Repair.LOST_RUN_FAILED
    else:
        log.warning("batch %s: run lost (%s); dispatching it again", batch.id, reason)
        add_log(batch.id, f"run lost ({reason}); dispatching it again", level="warning")
        batch.lost_at = utcnow()
        _send_again(change, batch)
        kind = Repair.LOST_RUN_RELAUNCHED
    change.after_commit.append(lambda: metrics.record_repair(kind))


def _send_again(change: Change, batch: Batch) -> None:
    """Give a running batch a fresh fencing token and send its run again after commit.

    Its running items go back to pending: the new run begins with them.
    """
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
