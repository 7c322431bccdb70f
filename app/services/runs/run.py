"""A run from its lease to its end: claim the batch, run its items beside the watcher, record the end."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import StrEnum

from flask import current_app
from sqlalchemy import Connection, insert, literal, select
from sqlalchemy.exc import OperationalError

from app.extensions import db
from app.models import Batch, BatchLog, BatchStatus
from app.models._types import utcnow
from app.services import dispatch, leases, queue_manager
from app.services.queue_statements import NO_ITEM, ItemWrite
from app.services.runs.claim import Claimed, lease_and_claim
from app.services.runs.items import Fenced, ItemsEnd, record_item, run_items
from app.services.runs.watcher import Watcher

log = logging.getLogger(__name__)


class RunOutcome(StrEnum):
    """What became of a run, in a word: the task's result."""

    DONE = BatchStatus.DONE.value
    FAILED = BatchStatus.FAILED.value
    STOPPED = BatchStatus.STOPPED.value
    DUPLICATE = "duplicate"  # another delivery of the same run holds the lease
    FENCED = "fenced"  # a newer run owns the batch now
    STALE = "stale"  # the batch no longer waits for this run
    HANDED_BACK = "handed back"  # the worker is shutting down: the run goes on elsewhere


def run_batch(batch_id: int, token: str, heartbeat_timeout: float = 30.0, worker_name: str | None = None) -> RunOutcome:
    """Run the batch's pending items and commit its end; return what happened.

    `worker_name` (the Celery node running it) is recorded on the batch, so the
    health check can say which worker runs which batch.

    An OperationalError (the database went away) is raised, not recorded: the
    batch is not at fault, and the task's failure signal recovers the run once
    the database answers again.
    """
    with db.engine.connect() as connection:
        # Counted as held until the claim says otherwise: a session lock outlives a
        # failed statement that took it, so a claim that raises gives it back too.
        lease = Lease(connection.execution_options(isolation_level="AUTOCOMMIT"), batch_id)
        try:
            leased, claimed = lease_and_claim(lease.connection, batch_id, token, worker_name)
            lease.held = leased
            if not leased:
                return RunOutcome.DUPLICATE
            outcome = _run_leased(lease, claimed, token, heartbeat_timeout)
        finally:
            lease.give_back()
    if outcome is RunOutcome.HANDED_BACK:  # only now: a copy delivered while we held the lease would have been dropped
        dispatch.hand_back_run(batch_id, token)
    return outcome


@dataclass
class Lease:
    """A run's lease: a session lock on the run's own (autocommit) connection, taken by its claim.

    The run's end gives it back in the same statement (queue_manager.finish_run);
    any other way out of the run gives it back with `give_back`.
    """

    connection: Connection
    batch_id: int
    held: bool = True

    def give_back(self) -> None:
        """Give the lease back if still held; if the connection is broken, end its session, which frees it too."""
        db.session.rollback()
        if not self.held:
            return
        self.held = False
        if self.connection.invalidated:  # its session is already gone, and the lease with it
            return
        try:
            leases.release(self.connection, self.batch_id)
        except OperationalError:
            log.warning("could not release the lease of batch %s; closing its connection instead", self.batch_id)
            self.connection.invalidate()


def _finish(lease: Lease, token: str, error: str | None = None, last_item: ItemWrite = NO_ITEM) -> RunOutcome | None:
    """End the run (which gives its lease back); its outcome, or None if the run no longer owns the batch."""
    status = queue_manager.finish_run(lease.connection, lease.batch_id, token, error, last_item)
    lease.held = False
    return None if status is None else RunOutcome(status.value)


def _run_leased(lease: Lease, claimed: Claimed | None, token: str, heartbeat_timeout: float) -> RunOutcome:
    batch_id = lease.batch_id
    if claimed is None:
        return _end_if_stopped_before_claim(lease, token)
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    watcher = Watcher(app, lease.connection, batch_id, token, heartbeat_every=max(1.0, heartbeat_timeout / 6))
    ended = ItemsEnd()
    try:
        watcher.start()
        ended = run_items(claimed, token, watcher)
    except Fenced:
        return RunOutcome.FENCED
    except OperationalError:
        db.session.rollback()
        raise
    except Exception as exc:  # the processor loop itself broke: the batch fails, the queue goes on
        log.exception("run of batch %s crashed", batch_id)
        db.session.rollback()
        ended = ItemsEnd(error=f"run crashed: {type(exc).__name__}: {exc}")
    finally:
        watcher.finish()
        if watcher.ended_run:  # the watcher's restart gave the lease back
            lease.held = False
    if ended.handed_back:
        _log_if_owned(batch_id, token, "worker shutting down: run handed back between items, to resume elsewhere")
        return RunOutcome.HANDED_BACK
    outcome = _finish(lease, token, ended.error, ended.last_item)
    if outcome is None:
        return RunOutcome.FENCED
    if ended.last_item.item_id is not None:  # written with the batch's end
        record_item(claimed.processor, ended.last_item, ended.last_seconds)
    return outcome


def _log_if_owned(batch_id: int, token: str, message: str) -> None:
    """Log a warning on the batch, only while this run owns it."""
    owned = select(Batch.id, literal(utcnow()), literal("warning"), literal(message)).where(
        Batch.id == batch_id, Batch.dispatch_token == token
    )
    db.session.execute(
        insert(BatchLog).from_select(["batch_id", "at", "level", "message"], owned),
        execution_options={"synchronize_session": False},
    )
    db.session.commit()


def _end_if_stopped_before_claim(lease: Lease, token: str) -> RunOutcome:
    """End the batch if a stop came before this run's claim; otherwise the run is stale.

    That stop found the lease taken (by this run before its claim, or by a stale
    delivery passing through) and left the batch stopping for its run to end.
    This run owns the batch's token, so that is its job; left alone, the batch
    would stay stopping until the reconciler's heartbeat timeout.
    """
    status = db.session.scalar(select(Batch.status).where(Batch.id == lease.batch_id, Batch.dispatch_token == token))
    db.session.rollback()
    if status != BatchStatus.STOPPING:
        return RunOutcome.STALE
    return _finish(lease, token) or RunOutcome.STALE
