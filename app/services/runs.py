"""Executing a batch: its pending items, one at a time, through its processor.

A run is guarded twice. Its lease (an advisory lock on its own connection)
keeps a duplicate delivery of the same message from running beside it, and its
dispatch token fences it: every write checks that the batch still carries the
token this run was dispatched with, so a run presumed lost and replaced can't
overwrite the newer one. The batch's final status is committed here, before
the task returns, because Celery's signals are not a delivery guarantee.

Every item has a time limit (its batch's item_timeout), which the run's watcher
enforces: past it the item's context reports a stop, and whatever the processor
then does the item fails as timed out and the run goes on. A processor that
ignores that too is not waited for: the watcher fails the item and sends the
batch's run again under a new token (queue_manager.restart_stalled_run), then
ends its own pool process, the way a hard stop ends a run.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

from flask import Flask, current_app
from sqlalchemy import Connection, text
from sqlalchemy.exc import OperationalError

from app import processors
from app.extensions import db
from app.models import BatchStatus, ItemStatus
from app.models._types import utcnow
from app.processors import ItemFailed, ItemKey, ProfileData, StopRequested
from app.processors.base import Processor
from app.services import dispatch, events, leases
from app.services.queue_manager import queue_manager

log = logging.getLogger(__name__)

# How often the watcher looks for a stop: the built-in processors notice it within this.
STOP_POLL_SECONDS = 0.2

# How long past its item's time limit a processor gets to let go before the
# watcher ends the run without it: a processor that looks at its context as
# RunContext asks (every second) lets go well within this.
TIMEOUT_GRACE_SECONDS = 3.0

# True in a prefork pool process (set by workers/hand_back.py), whose run may
# end the process when its processor ignores its time limit: the process is
# the pool's to replace. In any other pool (threads, solo) the process is the
# worker itself, so the stuck thread is abandoned instead.
may_end_own_process = False

# Set in a pool process whose worker is shutting down (SIGTERM, see
# workers/hand_back.py): the run lets its current item finish, then hands the
# batch back to the broker under the same token, to resume where it stopped.
shutdown_requested = threading.Event()

HANDED_BACK = "handed back"


class Fenced(Exception):
    """This run's dispatch token is no longer the batch's: a newer run owns it."""


@dataclass
class PendingItem:
    id: int
    position: int
    profile: ProfileData
    attempts: int  # attempts begun before this run


class Watcher(threading.Thread):
    """Beside the run: notices a stop quickly, keeps the heartbeat fresh and holds each item to its time limit."""

    def __init__(self, app: Flask, connection: Connection, batch_id: int, token: str, heartbeat_every: float) -> None:
        super().__init__(name=f"batch-{batch_id}-watcher", daemon=True)
        self.app = app  # for ending a stalled run, which publishes and dispatches
        self.connection = connection
        self.batch_id = batch_id
        self.token = token
        self.heartbeat_every = heartbeat_every
        self.stop_seen = threading.Event()
        # Set once the watcher ended the run itself (its processor ignored a time
        # limit): the batch went on under a new token, and the run's lease with it.
        self.ended_run = False
        self._finished = threading.Event()
        self._item: ItemContext | None = None
        # Orders the item's end (end_item) against the watcher's decisions about it.
        self._item_lock = threading.Lock()

    def run(self) -> None:
        # The claim has just stamped the heartbeat and seen the batch in
        # progress: the first look waits a round instead of competing with the
        # first item for the database at the busiest moment of the handoff.
        last_beat = time.monotonic()
        while not self._finished.wait(STOP_POLL_SECONDS):
            try:
                now = time.monotonic()
                if now - last_beat >= self.heartbeat_every:
                    self.connection.execute(
                        text("UPDATE batches SET heartbeat_at = now() WHERE id = :id AND dispatch_token = :token"),
                        {"id": self.batch_id, "token": self.token},
                    )
                    last_beat = now
                row = self.connection.execute(
                    text("SELECT status, dispatch_token FROM batches WHERE id = :id"), {"id": self.batch_id}
                ).one_or_none()
                if row is None or row.status != BatchStatus.IN_PROGRESS or row.dispatch_token != self.token:
                    self._see_stop()
            except Exception:  # a blip must not kill the watcher; the next round retries
                log.warning("watcher of batch %s could not reach the database", self.batch_id, exc_info=True)
            if self._enforce_time_limit():
                return  # the batch belongs to the next run now

    def _see_stop(self) -> None:
        with self._item_lock:
            self.stop_seen.set()
            if self._item is not None:
                self._item.interrupted.set()

    def begin_item(self, ctx: ItemContext) -> None:
        """Hold this item to its time limit (and pass it a stop already seen)."""
        with self._item_lock:
            self._item = ctx
            if self.stop_seen.is_set():
                ctx.interrupted.set()

    def end_item(self) -> None:
        """The processor let go of the item; from now on the watcher leaves its outcome alone."""
        with self._item_lock:
            self._item = None

    def _enforce_time_limit(self) -> bool:
        """Time the item in hand out at its deadline, and end the run if its processor ignores that.

        True when the run was ended. A stop seen before the deadline keeps its
        meaning (the item goes back to pending), so it is not timed out then.
        """
        with self._item_lock:
            ctx = self._item
            if ctx is None:
                return False
            now = time.monotonic()
            if not ctx.timed_out:
                if now >= ctx.deadline and not self.stop_seen.is_set():
                    ctx.time_out()
                    log.warning(
                        "batch %s: item %s passed its time limit of %g s", self.batch_id, ctx.pending.id, ctx.limit
                    )
                return False
            if now < ctx.deadline + TIMEOUT_GRACE_SECONDS:
                return False
            return self._end_stalled_run(ctx)

    def _end_stalled_run(self, ctx: ItemContext) -> bool:
        """Fail the item and send the batch's run again; then end this process, or abandon this thread.

        Called with the item lock held, so the processor's own outcome, should it
        return meanwhile, is written after this and fenced off. True when done.
        """
        how = "its process was ended" if may_end_own_process else "its thread was abandoned"
        error = f"{timed_out_error(ctx.limit)} (the processor ignored the limit; {how})"
        lines = item_lines(ctx, ItemStatus.FAILED, f"failed: {error}")
        batch_id, item_id = self.batch_id, ctx.pending.id
        try:
            with self.app.app_context():
                queue_manager.restart_stalled_run(self.connection, batch_id, self.token, item_id, error, lines)
        except Exception:  # the database is out of reach: the next round tries again
            log.warning("batch %s: could not end its stalled run", self.batch_id, exc_info=True)
            return False
        self.ended_run = True
        self.stop_seen.set()
        if may_end_own_process:
            log.error("batch %s: the processor ignored its time limit; ending its pool process", self.batch_id)
            os.kill(os.getpid(), signal.SIGKILL)
        log.error(
            "batch %s: the processor ignored its time limit; its thread is abandoned (its writes are fenced off)",
            self.batch_id,
        )
        return True

    def finish(self) -> None:
        self._finished.set()
        self.join(timeout=5)


class ItemContext:
    """The RunContext a processor gets, and the item in hand with its time limit, which the watcher enforces."""

    def __init__(self, item: ItemKey, pending: PendingItem, total: int, limit: float, started: float) -> None:
        self.batch_id = item.batch_id
        self.item = item
        self.pending = pending
        self.total = total
        self.limit = limit
        self.deadline = started + limit  # on time.monotonic()'s clock, from the item's start
        # A stop or the deadline: the processor should let go of the item now.
        self.interrupted = threading.Event()
        self.timed_out = False
        self.lines: list[tuple[str, str]] = []

    def stop_requested(self) -> bool:
        return self.interrupted.is_set()

    def wait(self, seconds: float) -> bool:
        return self.interrupted.wait(seconds)

    def log(self, message: str, level: str = "info") -> None:
        self.lines.append((level, message))

    def time_out(self) -> None:
        """The deadline passed: the item fails, and its processor is asked to let go."""
        self.timed_out = True
        self.interrupted.set()


def timed_out_error(limit: float) -> str:
    """The error of an item that ran past its time limit."""
    return f"timed out after {limit:g} s"


def run_batch(batch_id: int, token: str, heartbeat_timeout: float = 30.0, worker_name: str | None = None) -> str:
    """Run the batch's pending items and commit its end; return what happened, in a word.

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
            leased, claimed = _lease_and_claim(lease.connection, batch_id, token, worker_name)
            lease.held = leased
            if not leased:
                return "duplicate"
            outcome = _run_leased(lease, claimed, token, heartbeat_timeout)
        finally:
            lease.give_back()
    if outcome == HANDED_BACK:  # only now: a copy delivered while we held the lease would have been dropped
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


def _finish(lease: Lease, token: str, error: str | None = None, last_item: dict[str, Any] | None = None) -> str | None:
    """End the run (which gives its lease back); the new status, or None if the run no longer owns the batch."""
    status = queue_manager.finish_run(lease.connection, lease.batch_id, token, error, last_item)
    lease.held = False
    return status


def _run_leased(lease: Lease, claimed: Claimed | None, token: str, heartbeat_timeout: float) -> str:
    batch_id = lease.batch_id
    if claimed is None:
        return _end_if_stopped_before_claim(lease, token)
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    watcher = Watcher(app, lease.connection, batch_id, token, heartbeat_every=max(1.0, heartbeat_timeout / 6))
    ended = ItemsEnd()
    try:
        watcher.start()
        ended = _run_items(claimed, token, watcher)
    except Fenced:
        return "fenced"
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
        return HANDED_BACK
    last_item = ended.last_item.parameters if ended.last_item is not None else None
    return _finish(lease, token, ended.error, last_item) or "fenced"


_LOG_IF_OWNED = text(
    """
    INSERT INTO batch_logs (batch_id, at, level, message)
    SELECT id, :now, 'warning', :message FROM batches WHERE id = :id AND dispatch_token = :token
    """
)


def _log_if_owned(batch_id: int, token: str, message: str) -> None:
    db.session.execute(_LOG_IF_OWNED, {"id": batch_id, "token": token, "now": utcnow(), "message": message})
    db.session.commit()


def _end_if_stopped_before_claim(lease: Lease, token: str) -> str:
    """End the batch if a stop came before this run's claim; otherwise the run is stale.

    That stop found the lease taken (by this run before its claim, or by a stale
    delivery passing through) and left the batch stopping for its run to end.
    This run owns the batch's token, so that is its job; left alone, the batch
    would stay stopping until the reconciler's heartbeat timeout.
    """
    status = db.session.execute(_OWN_STATUS, {"id": lease.batch_id, "token": token}).scalar()
    db.session.rollback()
    if status != BatchStatus.STOPPING:
        return "stale"
    return _finish(lease, token) or "stale"


_OWN_STATUS = text("SELECT status FROM batches WHERE id = :id AND dispatch_token = :token")


@dataclass
class Claimed:
    """What a run learns when it takes over its batch."""

    batch_id: int
    processor: str
    parameters: dict[str, Any]
    total: int
    items: list[PendingItem]
    first_started: bool
    item_timeout: float  # seconds each item may run
    claimed_at: float  # time.monotonic() when the claim started the first item


# Taking over the batch, in one statement on the lease's own (autocommit)
# connection, because it lies between one batch's end and the next one's first
# item: it takes the lease, and only if it got it and the batch is in progress
# under this run's token, it bumps the attempt, logs the start, reads the items
# left and marks the first of them running. An item already `running` is left
# over from an attempt that died with the same token (a message redelivered
# after a lost connection or a worker shutdown): this run holds the lease, so
# nobody else is working on it, and it is done again.
_LEASE_AND_CLAIM = text(
    """
    WITH lease AS (
        SELECT pg_try_advisory_lock(:lease_class, :id) AS taken
    ), own AS (
        UPDATE batches SET run_attempts = run_attempts + 1, heartbeat_at = :now, worker_name = :worker, lost_at = NULL
        WHERE id = :id AND dispatch_token = :token AND status = 'in_progress' AND (SELECT taken FROM lease)
        RETURNING id, processor, parameters, total_items, run_attempts, item_timeout
    ), logged AS (
        INSERT INTO batch_logs (batch_id, at, level, message)
        SELECT id, :now, 'info', 'run began on ' || :host
            || CASE WHEN run_attempts > 1 THEN ' (attempt ' || run_attempts || ')' ELSE '' END
        FROM own
    ), pending AS (
        SELECT i.id, i.position, p.id AS profile_id, p.name, p.attributes, i.attempts
        FROM batch_items i JOIN profiles p ON p.id = i.profile_id
        WHERE i.batch_id IN (SELECT id FROM own) AND i.status IN ('pending', 'running')
    ), first_started AS (
        UPDATE batch_items SET status = 'running', attempts = attempts + 1, started_at = :now, error = NULL
        WHERE id = (SELECT id FROM pending ORDER BY position LIMIT 1)
        RETURNING id
    )
    SELECT lease.taken, own.id IS NOT NULL AS claimed, own.processor, own.parameters, own.total_items, own.item_timeout,
        (SELECT json_agg(json_build_array(id, position, profile_id, name, attributes, attempts) ORDER BY position)
         FROM pending) AS items,
        EXISTS (SELECT 1 FROM first_started) AS first_started
    FROM lease LEFT JOIN own ON true
    """
)

# An item starts only while its run owns the batch and no stop has come: the
# batch row lock orders this against a stop, so no item begins after one.
_START_ITEM = text(
    """
    WITH own AS (
        SELECT id FROM batches
        WHERE id = :batch_id AND dispatch_token = :token AND status = 'in_progress' FOR UPDATE
    )
    UPDATE batch_items SET status = 'running', attempts = attempts + 1, started_at = :now, error = NULL
    WHERE id = :item_id AND batch_id IN (SELECT id FROM own)
    RETURNING attempts
    """
)

# An item's outcome, the batch's counters and the log lines, in one statement,
# only while this run owns the batch. (A run's last item is written with the
# batch's end instead: queue_manager.finish_run.)
_FINISH_ITEM = text(
    """
    WITH own AS (
        SELECT id FROM batches WHERE id = :batch_id AND dispatch_token = :token FOR UPDATE
    ), item AS (
        UPDATE batch_items SET status = :item_status, result = CAST(:item_result AS jsonb), error = :item_error,
            started_at = CASE WHEN :item_interrupted THEN NULL ELSE started_at END,
            finished_at = :item_finished_at
        WHERE id = :item_id AND batch_id IN (SELECT id FROM own)
    ), counters AS (
        UPDATE batches SET succeeded_items = succeeded_items + :succeeded, failed_items = failed_items + :failed
        WHERE id IN (SELECT id FROM own)
    ), logged AS (
        INSERT INTO batch_logs (batch_id, at, level, message)
        SELECT own.id, :item_at, line.level, line.message
        FROM own, jsonb_to_recordset(CAST(:lines AS jsonb)) AS line(level text, message text)
    )
    SELECT count(*) FROM own
    """
)


def _lease_and_claim(
    lease_connection: Connection, batch_id: int, token: str, worker_name: str | None
) -> tuple[bool, Claimed | None]:
    """Take the batch's lease and, with it, the batch: say whether the lease was free and what is left to do."""
    parameters = {
        "lease_class": leases.LEASE_CLASS,
        "id": batch_id,
        "token": token,
        "now": utcnow(),
        "host": socket.gethostname(),
        "worker": worker_name,
    }
    claimed_at = time.monotonic()  # the first item's start, for its time limit
    row = lease_connection.execute(_LEASE_AND_CLAIM, parameters).one()
    if not row.taken or not row.claimed:
        return bool(row.taken), None
    items = [
        PendingItem(item_id, position, ProfileData(profile_id, name, attributes or {}), attempts)
        for item_id, position, profile_id, name, attributes, attempts in row.items or []
    ]
    return True, Claimed(
        batch_id,
        row.processor,
        dict(row.parameters),
        row.total_items,
        items,
        row.first_started,
        item_timeout=row.item_timeout,
        claimed_at=claimed_at,
    )


@dataclass
class ItemsEnd:
    """How the item loop ended: an error for the batch, the last item's record still
    to be written with the batch's end, or a hand-back because the worker is shutting down."""

    error: str | None = None
    last_item: ItemRecord | None = None
    handed_back: bool = False


def _run_items(claimed: Claimed, token: str, watcher: Watcher) -> ItemsEnd:
    """Run the items, one at a time, until they are done, a stop comes or the worker shuts down.

    The last item's outcome is written in the transaction that ends the batch
    (one commit fewer between this batch and the next); the others are written
    as they finish.
    """
    processor = processors.get(claimed.processor)
    if processor is None:
        return ItemsEnd(error=f"processor {claimed.processor!r} is not registered on this worker")
    batch_id, items = claimed.batch_id, claimed.items
    for index, item in enumerate(items):
        attempt, started_at = item.attempts + 1, claimed.claimed_at  # the claim started the first item
        if index > 0 or not claimed.first_started:
            if shutdown_requested.is_set():
                return ItemsEnd(handed_back=True)
            started_at = time.monotonic()
            started = None if watcher.stop_seen.is_set() else _start_item(batch_id, token, item.id)
            if started is None:
                break
            attempt = started
        key = ItemKey(batch_id, item.profile.id, attempt)
        ctx = ItemContext(key, item, claimed.total, claimed.item_timeout, started_at)
        outcome = _process_in_time(processor, claimed.parameters, ctx, watcher)
        record = ItemRecord.of(batch_id, token, outcome, ctx)
        if index == len(items) - 1 and outcome.status is not ItemStatus.PENDING:
            return ItemsEnd(last_item=record)
        if not record.write():
            db.session.rollback()
            raise Fenced()
        db.session.commit()
        events.publish("item", batch_id)
        if outcome.status is ItemStatus.PENDING:
            break
    return ItemsEnd()


@dataclass
class Outcome:
    status: ItemStatus
    result: Any = None
    error: str | None = None


def _process_in_time(processor: Processor, parameters: dict[str, Any], ctx: ItemContext, watcher: Watcher) -> Outcome:
    """Run the processor on the item under its time limit: past it the item failed, whatever the processor did."""
    watcher.begin_item(ctx)
    try:
        outcome = _process(processor, ctx.pending, parameters, ctx)
    finally:
        watcher.end_item()
    if ctx.timed_out:
        return Outcome(ItemStatus.FAILED, error=timed_out_error(ctx.limit))
    return outcome


def _process(processor: Processor, item: PendingItem, parameters: dict[str, Any], ctx: ItemContext) -> Outcome:
    """Run the processor on one profile and say how it went."""
    try:
        result = processor.process(item.profile, parameters, ctx)
    except StopRequested:
        return Outcome(ItemStatus.PENDING)
    except ItemFailed as exc:
        return Outcome(ItemStatus.FAILED, error=str(exc) or "failed")
    except Exception as exc:  # a processor's bug fails its item, not the whole run
        log.exception("processor %s failed on profile %s", processor.name, item.profile.id)
        return Outcome(ItemStatus.FAILED, error=f"{type(exc).__name__}: {exc}")
    return Outcome(ItemStatus.SUCCEEDED, result=result)


def _start_item(batch_id: int, token: str, item_id: int) -> int | None:
    """Mark the item running unless a stop (or a newer run) came first; return its attempt number."""
    attempt = db.session.execute(
        _START_ITEM, {"batch_id": batch_id, "token": token, "item_id": item_id, "now": utcnow()}
    ).scalar()
    db.session.commit()
    return attempt


def item_lines(ctx: ItemContext, status: ItemStatus, message: str) -> list[dict[str, str]]:
    """The log lines of an item's end: what its processor logged, then how it ended."""
    name = ctx.pending.profile.name
    lines = [{"level": level, "message": f"{name}: {line}"} for level, line in ctx.lines]
    lines.append(
        {
            "level": "error" if status is ItemStatus.FAILED else "info",
            "message": f"item {ctx.pending.position + 1}/{ctx.total} ({name}) {message}",
        }
    )
    return lines


@dataclass
class ItemRecord:
    """An item's outcome, stamped when the processor finished, ready to be written."""

    batch_id: int
    token: str
    parameters: dict[str, Any]  # the item_* parameters, counters and lines of _FINISH_ITEM and of the run's end

    @classmethod
    def of(cls, batch_id: int, token: str, outcome: Outcome, ctx: ItemContext) -> ItemRecord:
        now, interrupted = utcnow(), outcome.status is ItemStatus.PENDING
        if interrupted:
            message = "interrupted by the stop; left pending"
        elif outcome.status is ItemStatus.SUCCEEDED:
            message = "succeeded"
        else:
            message = f"failed: {outcome.error}"
        lines = item_lines(ctx, outcome.status, message)
        return cls(
            batch_id,
            token,
            {
                "item_id": ctx.pending.id,
                "item_status": outcome.status.value,
                "item_result": json.dumps(outcome.result) if outcome.result is not None else None,
                "item_error": outcome.error,
                "item_interrupted": interrupted,
                "item_finished_at": None if interrupted else now,
                "item_at": now,
                "succeeded": int(outcome.status is ItemStatus.SUCCEEDED),
                "failed": int(outcome.status is ItemStatus.FAILED),
                "lines": json.dumps(lines),
            },
        )

    def write(self) -> bool:
        """Write the outcome, the batch's progress and the log lines in the session's transaction.

        False when the run no longer owns the batch (nothing is written then).
        """
        parameters = {**self.parameters, "batch_id": self.batch_id, "token": self.token}
        return bool(db.session.execute(_FINISH_ITEM, parameters).scalar())
