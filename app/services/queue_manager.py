"""The queue's rules, in one place: the only code that changes a batch's status or position.

Every queue change is one transaction that starts by locking the single
queue_state row, so enqueue, promote, stop, cancel, move, start and recovery
are serialized against each other. The database backs the rules up: a partial
unique index refuses a second running batch and a deferred unique constraint
refuses a duplicated position.

A run's own end is the one change that skips the queue lock, because it lies
between two batches and only ever frees the running slot: it is one statement
that locks its batch's row, which every change touching the running batch locks
too (after the queue row, so there is no cycle to deadlock on). A promotion
that misses a slot freed at the same moment starts nothing, and the end's own
chained promotion follows.

Side effects (dispatching a run, publishing a live hint) happen only after the
transaction commits, so a worker never looks for a row it can't see yet.

The queue's order is each queued batch's rank (see app/models/batches.py):
positions are derived from it, so promoting, cancelling and moving change one
row, however long the queue.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, func, insert, select, text, update

from app.errors import Conflict, NotFound
from app.extensions import db
from app.models import (
    RUNNING_STATUSES,
    Batch,
    BatchItem,
    BatchLog,
    BatchStatus,
    QueueState,
)
from app.models._types import utcnow
from app.models.queue_state import QUEUE_STATE_ID
from app.services import dispatch, events, leases, liveness, storable_id

log = logging.getLogger(__name__)

# Runs a batch may begin before a lost one fails it instead of being dispatched
# again (BATCH_MAX_RUN_ATTEMPTS overrides it).
MAX_RUN_ATTEMPTS = 3

# Space between the ranks of consecutive batches: room for 32 moves between the
# same two neighbours before the ranks around them must be spread out again.
RANK_GAP = 1 << 32

# How many batches after a full spot a move may re-rank before it renumbers the
# whole queue instead (one statement, and only when a long run of ranks is dense).
RESPACE_WINDOW = 64


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


@dataclass
class QueueSnapshot:
    """What GET /queue reports."""

    paused: bool
    paused_by: str | None
    paused_at: datetime | None
    running: Batch | None
    queued_count: int

    @property
    def start_enabled(self) -> bool:
        """Start does something useful whenever nothing runs.

        Paused, it resumes the queue; empty, it leads to the creation form; not
        paused with a head that waits (its promotion was lost), it promotes it.
        """
        return self.running is None


class LeaseStillHeld(Exception):
    """A run's task failed but its lease is still held: its process is dying; look again shortly."""


@dataclass
class _Change:
    """One queue transaction: whether the queue is paused, and what to do after commit."""

    paused: bool
    after_commit: list[Callable[[], None]] = field(default_factory=list)

    def publish(self, kind: str, batch_id: int | None) -> None:
        self.after_commit.append(lambda: events.publish(kind, batch_id))


# Taking the queue lock: the row lock is held until commit, which serializes
# every queue change, and the pause it reads is the current one.
_LOCK_QUEUE = text("SELECT paused FROM queue_state WHERE id = :id FOR UPDATE")

# Promotion in one statement, run under the queue lock so its snapshot is
# current: if nothing runs, the head (lowest rank) becomes in_progress with a
# fresh dispatch token, and its log line is written. The batches behind it
# move up by themselves: their positions are counted, not stored.
_PROMOTE_HEAD = text(
    """
    WITH head AS (
        SELECT id FROM batches
        WHERE queue_rank IS NOT NULL
            AND NOT EXISTS (SELECT 1 FROM batches WHERE status IN ('in_progress', 'stopping'))
        ORDER BY queue_rank LIMIT 1
    ), promoted AS (
        UPDATE batches b SET status = 'in_progress', queue_rank = NULL, started_at = :now,
            dispatch_token = :token, heartbeat_at = :now
        FROM head
        WHERE b.id = head.id
        RETURNING b.id
    )
    INSERT INTO batch_logs (batch_id, at, level, message)
    SELECT id, :now, 'info', 'started' FROM promoted
    RETURNING batch_id
    """
)

# The ranks of the two queued batches (other than the one moving) around a place.
_NEIGHBOUR_RANKS = text(
    "SELECT queue_rank FROM batches WHERE queue_rank IS NOT NULL AND id <> :id ORDER BY queue_rank OFFSET :skip LIMIT 2"
)

# The batches (other than the one moving) ranked after a full spot.
_RANKS_AFTER = text(
    "SELECT id, queue_rank FROM batches WHERE queue_rank > :rank AND id <> :id ORDER BY queue_rank LIMIT :limit"
)

# The last resort when a long run of ranks is dense: spread the whole queue out.
_RENUMBER = text(
    """
    UPDATE batches b SET queue_rank = ordered.place * :gap
    FROM (SELECT id, row_number() OVER (ORDER BY queue_rank) AS place
          FROM batches WHERE queue_rank IS NOT NULL) ordered
    WHERE b.id = ordered.id
    """
)

# The end of a run, in one statement, so that a run's own end is a single round
# trip on its autocommit connection (it lies between two batches). Only while
# the batch is running (and, with a token, only for the run holding it): it
# writes the run's last item if there is one, adds its outcome to the counters,
# decides the batch's status (stopped after a stop, done when every item
# succeeded and the run reported no error, failed otherwise), puts items left
# running back to pending and logs the item's lines, then the end; a run ending
# itself also gives back its lease. FOR UPDATE reads the batch as it is now,
# whatever the statement's snapshot saw.
_END_RUN = text(
    """
    WITH own AS (
        SELECT id, status, total_items, error,
            succeeded_items + :succeeded AS succeeded, failed_items + :failed AS failed
        FROM batches
        WHERE id = :id AND status IN ('in_progress', 'stopping')
            AND (CAST(:token AS text) IS NULL OR dispatch_token = CAST(:token AS text))
        FOR UPDATE
    ), decided AS (
        SELECT id, total_items, succeeded, failed, total_items - succeeded - failed AS pending, error,
            CASE
                WHEN status = 'stopping' THEN 'stopped'
                WHEN CAST(:error AS text) IS NULL AND failed = 0 AND succeeded = total_items THEN 'done'
                ELSE 'failed'
            END AS status
        FROM own
    ), outcome AS (
        SELECT id, succeeded, failed, pending, status,
            CASE
                WHEN status <> 'failed' THEN coalesce(CAST(:error AS text), error)
                WHEN CAST(:error AS text) IS NOT NULL THEN CAST(:error AS text)
                WHEN failed > 0 THEN failed || ' of ' || total_items || ' items failed'
                ELSE pending || ' of ' || total_items || ' items did not run'
            END AS error
        FROM decided
    ), last_item AS (
        UPDATE batch_items SET status = :item_status, result = CAST(:item_result AS jsonb), error = :item_error,
            started_at = CASE WHEN :item_interrupted THEN NULL ELSE started_at END,
            finished_at = :item_finished_at
        WHERE id = CAST(:item_id AS integer) AND batch_id IN (SELECT id FROM outcome)
    ), ended AS (
        UPDATE batches b SET status = o.status, error = o.error, finished_at = :now,
            succeeded_items = o.succeeded, failed_items = o.failed
        FROM outcome o
        WHERE b.id = o.id
    ), left_pending AS (
        UPDATE batch_items SET status = 'pending', started_at = NULL
        WHERE batch_id IN (SELECT id FROM outcome WHERE pending > 0) AND status = 'running'
            AND id IS DISTINCT FROM CAST(:item_id AS integer)
    ), logged AS (
        INSERT INTO batch_logs (batch_id, at, level, message)
        SELECT batch_id, at, level, message FROM (
            SELECT o.id AS batch_id, CAST(:item_at AS timestamptz) AS at, line.level, line.message, line.place
            FROM outcome o,
                ROWS FROM (jsonb_to_recordset(CAST(:lines AS jsonb)) AS (level text, message text))
                WITH ORDINALITY AS line(level, message, place)
            UNION ALL
            SELECT id, :now, CASE WHEN status = 'failed' THEN 'error' ELSE 'info' END,
                CASE status
                    WHEN 'stopped' THEN 'stopped (' || pending || ' items left pending)'
                    WHEN 'done' THEN 'finished: done'
                    ELSE 'finished: failed (' || error || ')'
                END,
                9223372036854775807
            FROM outcome
        ) lines
        ORDER BY place
    ), released AS (
        -- A run ending itself gives its lease back, once the batch's row is locked
        -- (own), so that nobody acting on a free lease finds the batch still running.
        SELECT pg_advisory_unlock(:lease_class, :id) FROM (SELECT count(*) FROM own) AS own_first
        WHERE :release_lease
    )
    SELECT (SELECT status FROM outcome) AS status, (SELECT count(*) FROM released) AS released
    """
)

# Ending a run whose processor ignored its item's time limit, in one statement on
# the run's own autocommit connection (the run's watcher sends it; the stuck
# processor holds the run's thread). Only while the batch carries the run's
# token: it fails the item, logs it, and gives the batch a fresh token so the
# next run takes over at the next item. run_attempts goes back down by the one
# the ended run's claim added (the next claim adds it again): a deliberate
# restart is not a lost run and must not bring the batch nearer to
# BATCH_MAX_RUN_ATTEMPTS. The lease is given back whatever the outcome, once the
# batch's row is locked: this run is over either way, and a lease left to an
# abandoned thread would turn the next run of the batch into a "duplicate".
_RESTART_STALLED_RUN = text(
    """
    WITH own AS (
        SELECT id FROM batches
        WHERE id = :id AND dispatch_token = :token AND status IN ('in_progress', 'stopping')
        FOR UPDATE
    ), item AS (
        UPDATE batch_items SET status = 'failed', error = :item_error, finished_at = :now
        WHERE id = :item_id AND batch_id IN (SELECT id FROM own) AND status = 'running'
        RETURNING id
    ), restarted AS (
        UPDATE batches b SET dispatch_token = :new_token, heartbeat_at = :now,
            failed_items = b.failed_items + (SELECT count(*) FROM item),
            run_attempts = greatest(b.run_attempts - 1, 0)
        FROM own
        WHERE b.id = own.id
        RETURNING b.id
    ), logged AS (
        INSERT INTO batch_logs (batch_id, at, level, message)
        SELECT own.id, :now, line.level, line.message
        FROM own,
            ROWS FROM (jsonb_to_recordset(CAST(:lines AS jsonb)) AS (level text, message text))
            WITH ORDINALITY AS line(level, message, place)
        ORDER BY line.place
    ), released AS (
        SELECT pg_advisory_unlock(:lease_class, :id) FROM (SELECT count(*) FROM own) AS own_first
    )
    SELECT (SELECT count(*) FROM restarted) AS restarted, (SELECT count(*) FROM released) AS released
    """
)

# What _END_RUN writes for a run that ends without a last item to record.
_NO_LAST_ITEM = {
    "item_id": None,
    "item_status": None,
    "item_result": None,
    "item_error": None,
    "item_interrupted": False,
    "item_finished_at": None,
    "item_at": None,
    "succeeded": 0,
    "failed": 0,
    "lines": "[]",
}

# Stamping the repair round, only if no other process ran one within :gap
# seconds: the workers and beats each run rounds on a timer, one a period is enough.
_CLAIM_REPAIR_ROUND = text(
    """
    UPDATE queue_state SET repaired_at = now()
    WHERE id = :id AND (repaired_at IS NULL OR repaired_at <= now() - make_interval(secs => :gap))
    RETURNING id
    """
)

_RESET_RUNNING_ITEMS = text(
    "UPDATE batch_items SET status = 'pending', started_at = NULL WHERE batch_id = :id AND status = 'running'"
)


class QueueManager:
    """Owner of every batch status and queue position change."""

    # --- reads ---------------------------------------------------------------

    @staticmethod
    def get_running_batch() -> Batch | None:
        """Return the batch holding the running slot, if any."""
        return db.session.scalar(select(Batch).where(Batch.status.in_(RUNNING_STATUSES)))

    @staticmethod
    def get_next_position() -> int:
        """Return the position a batch joining the end of the queue gets."""
        return QueueManager._queued_count() + 1

    @staticmethod
    def _queued_count() -> int:
        return db.session.scalar(select(func.count()).where(Batch.queue_rank.is_not(None))) or 0

    @classmethod
    def snapshot(cls) -> QueueSnapshot:
        """Read the queue's state as GET /queue shows it."""
        state = db.session.get(QueueState, QUEUE_STATE_ID) or QueueState(paused=False)
        return QueueSnapshot(
            paused=bool(state.paused),
            paused_by=state.paused_by,
            paused_at=state.paused_at,
            running=cls.get_running_batch(),
            queued_count=cls._queued_count(),
        )

    # --- changes -------------------------------------------------------------

    @contextmanager
    def _change(self) -> Iterator[_Change]:
        """Run one serialized queue transaction, then its after-commit actions."""
        change = _Change(paused=self._lock_queue())
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

    @staticmethod
    def _lock_queue() -> bool:
        """Take the queue lock for this transaction; return whether the queue is paused."""
        paused = db.session.execute(_LOCK_QUEUE, {"id": QUEUE_STATE_ID}).scalar()
        if paused is None:  # a database migrated without its state row
            db.session.execute(
                text("INSERT INTO queue_state (id, paused) VALUES (:id, false) ON CONFLICT DO NOTHING"),
                {"id": QUEUE_STATE_ID},
            )
            paused = db.session.execute(_LOCK_QUEUE, {"id": QUEUE_STATE_ID}).scalar()
        return bool(paused)

    def enqueue(self, new: NewBatch) -> tuple[Batch, bool]:
        """Add a batch at the end of the queue and start it if the slot is free.

        Returns the batch and whether it was created; a repeated Idempotency-Key
        with the same body returns the earlier batch instead.
        """
        with self._change() as change:
            if new.idempotency_key:
                earlier = db.session.scalar(select(Batch).where(Batch.idempotency_key == new.idempotency_key))
                if earlier is not None:
                    if earlier.request_digest != new.request_digest:
                        raise Conflict("this Idempotency-Key was used with another request body")
                    return earlier, False
            batch = Batch(
                name=new.name,
                status=BatchStatus.QUEUED.value,
                queue_rank=self._last_rank() + RANK_GAP,
                processor=new.processor,
                parameters=new.parameters,
                profile_ids=new.profile_ids,
                total_items=len(new.profile_ids),
                item_timeout=new.item_timeout,
                created_by=new.created_by,
                idempotency_key=new.idempotency_key,
                request_digest=new.request_digest,
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
            self._log(batch.id, f"created by {new.created_by or 'unknown'} with {len(new.profile_ids)} profiles")
            change.publish("created", batch.id)
            self._promote_head(change)
        return batch, True

    def promote_next_batch(self) -> int | None:
        """Start the head of the queue if nothing runs and the queue isn't paused; return its id.

        Idempotent: called twice, or from many workers at once, it starts at most
        one batch, because the queue lock serializes the callers and the second
        finds the slot taken. It returns the id rather than the row: it runs
        between two batches, while the new run starts beside it on two cores.
        """
        with self._change() as change:
            return self._promote_head(change)

    def finish_run(
        self,
        connection: Connection,
        batch_id: int,
        token: str,
        error: str | None = None,
        last_item: dict[str, Any] | None = None,
    ) -> str | None:
        """Record the end of a run: done, failed or (after a stop) stopped; return the new status.

        One statement on the run's own autocommit connection, with the run's
        last item (`last_item`: the item_* parameters of _END_RUN) written in
        it, which also gives back the run's lease, held on that connection,
        whatever the outcome. Fenced by the dispatch token: a run that was
        presumed lost and replaced changes nothing (None). No queue lock,
        because a run's end only frees the running slot (see the module
        docstring), and no promotion here: the run task's success or failure
        signal chains it.
        """
        parameters = self._end_parameters(batch_id, error, token, last_item, release_lease=True)
        status = connection.execute(_END_RUN, parameters).scalar()
        if status is not None:
            events.publish("finished", batch_id)
        return status

    def restart_stalled_run(
        self, connection: Connection, batch_id: int, token: str, item_id: int, error: str, lines: list[dict[str, str]]
    ) -> str | None:
        """End a run whose processor ignored its item's time limit: fail the item and send the batch's run again.

        One statement on the run's own autocommit connection (_RESTART_STALLED_RUN),
        which also gives back the run's lease; then, committed, the live hint
        and the new run, under the batch's new token. Fenced by the old token: a
        run that no longer owns the batch changes nothing (None). Otherwise it
        returns the new token; the old run's writes are fenced off from then on.
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
        if not connection.execute(_RESTART_STALLED_RUN, parameters).scalar():
            return None
        events.publish("item", batch_id)
        try:
            dispatch.send_run(batch_id, new_token)
        except Exception:  # committed: a lost dispatch is the reconciler's to repair
            log.exception("batch %s: could not send its run again; the reconciler will", batch_id)
        return new_token

    def stop(self, batch_id: int, actor: str) -> Batch:
        """Ask the running batch to stop and pause the queue until Start."""
        with self._change() as change:
            batch = self._locked_batch(batch_id)
            if batch.status != BatchStatus.IN_PROGRESS:
                raise Conflict(f"batch {batch_id} is {batch.status}; only a batch in progress can be stopped")
            batch.status = BatchStatus.STOPPING.value
            batch.stop_requested_at = utcnow()
            batch.stop_requested_by = actor
            self._set_paused(change, True, actor)
            self._log(batch.id, f"stop requested by {actor}")
            db.session.flush()
            if not leases.is_held(batch.id):
                # No run holds the batch (not picked up yet, or its worker died):
                # nothing can be interrupted, so it is stopped at once.
                self._end_run(change, batch.id, None)
            change.publish("stopping", batch.id)
        db.session.refresh(batch)
        return batch

    def cancel(self, batch_id: int, actor: str) -> Batch:
        """Remove a queued batch from the queue; the batches behind it move up."""
        with self._change() as change:
            batch = self._locked_batch(batch_id)
            if batch.status != BatchStatus.QUEUED:
                raise Conflict(f"batch {batch_id} is {batch.status}; only a queued batch can be cancelled")
            batch.status = BatchStatus.CANCELLED.value
            batch.queue_rank = None
            batch.finished_at = utcnow()
            self._log(batch.id, f"cancelled by {actor}")
            change.publish("cancelled", batch.id)
        return batch

    def move(self, batch_id: int, position: int, actor: str) -> Batch:
        """Put a queued batch at a position (1-based; past the end means last)."""
        return self._move(batch_id, lambda current: position, actor)

    def move_by(self, batch_id: int, steps: int, actor: str) -> Batch:
        """Move a queued batch `steps` places towards the end (negative: the front), from where it is now.

        The table's up and down controls: counted under the queue lock, so two
        clicks at once move the batch two places, not one.
        """
        return self._move(batch_id, lambda current: current + steps, actor)

    def _move(self, batch_id: int, target_of: Callable[[int], int], actor: str) -> Batch:
        with self._change() as change:
            batch = self._locked_batch(batch_id)
            if batch.status != BatchStatus.QUEUED:
                raise Conflict(f"batch {batch_id} is {batch.status}; only a queued batch can be moved")
            current = batch.queue_position or 1  # a queued batch always has one
            target = max(1, min(target_of(current), self._queued_count()))
            if target != current:
                batch.queue_rank = self._rank_for(batch.id, target)
                self._log(batch.id, f"moved from #{current} to #{target} by {actor}")
                change.publish("moved", batch.id)
        return batch

    def start(self, actor: str) -> QueueSnapshot:
        """Un-pause the queue and promote its head; refused while a batch runs."""
        with self._change() as change:
            running = self.get_running_batch()
            if running is not None:
                raise Conflict(f"batch {running.id} is running; Start is allowed only when nothing runs")
            self._set_paused(change, False, None)
            promoted = self._promote_head(change)
            if promoted is not None:
                self._log(promoted, f"queue started by {actor}")
            change.publish("queue", None)
        return self.snapshot()

    def recover_lost_run(
        self, heartbeat_timeout: float, stop_grace: float, max_attempts: int = MAX_RUN_ATTEMPTS, min_gap: float = 0.0
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
        if min_gap and self._repaired_within(min_gap):
            return None
        with self._change() as change:
            if db.session.execute(_CLAIM_REPAIR_ROUND, {"id": QUEUE_STATE_ID, "gap": min_gap}).first() is None:
                return None
            liveness.forget_long_gone()
            batch = db.session.scalar(select(Batch).where(Batch.status.in_(RUNNING_STATUSES)).with_for_update())
            if batch is not None:
                self._recover(change, batch, heartbeat_timeout, stop_grace, max_attempts)
            promoted = self._promote_head(change)
        if promoted is not None:  # usually it only beat the run's own promotion by a few ms
            log.info("reconciler: promoted batch %s", promoted)
        return promoted

    def recover_dead_run(self, batch_id: int, token: str, max_attempts: int = MAX_RUN_ATTEMPTS) -> int | None:
        """Rescue a run whose task just failed (its process died, or it raised), then fill a free slot.

        Celery reported this dispatch's end, so there is no need to wait for the
        heartbeat: if the batch still carries the token and nobody holds its
        lease, the run is gone now. A lease still held belongs to the dying
        process for a moment more: LeaseStillHeld asks the caller to try again
        shortly. Anything else (a newer run, a batch that ended) is left alone.
        """
        with self._change() as change:
            batch = db.session.scalar(
                select(Batch)
                .where(Batch.id == batch_id, Batch.status.in_(RUNNING_STATUSES), Batch.dispatch_token == token)
                .with_for_update()
            )
            if batch is not None:
                if leases.is_held(batch.id):
                    raise LeaseStillHeld(f"batch {batch_id}: the failed run's lease is still held")
                self._relaunch_or_end(change, batch, "its run task failed", max_attempts)
            return self._promote_head(change)

    # --- the rules' building blocks (always called inside _change) ------------

    def _recover(
        self, change: _Change, batch: Batch, heartbeat_timeout: float, stop_grace: float, max_attempts: int
    ) -> None:
        now = utcnow()
        held = leases.is_held(batch.id)
        if held:
            if (
                batch.status == BatchStatus.STOPPING
                and batch.stop_requested_at is not None
                and now - batch.stop_requested_at > timedelta(seconds=stop_grace)
                and batch.dispatch_token
            ):
                token = batch.dispatch_token
                batch.error = f"killed: did not stop within {stop_grace:g}s of the stop"
                self._log(batch.id, f"did not stop within {stop_grace:g}s; terminating its process", level="warning")
                change.after_commit.append(lambda: dispatch.revoke_run(token))
            return
        if batch.status == BatchStatus.STOPPING:  # a stop found it running, and its run has ended since
            self._relaunch_or_end(change, batch, "its run ended without stopping it", max_attempts)
            return
        if liveness.claimer_gone(batch.id):  # no need to wait for the heartbeat to age
            self._relaunch_or_end(change, batch, "its worker is gone", max_attempts)
            return
        beat = batch.heartbeat_at or batch.started_at or now
        if now - beat < timedelta(seconds=heartbeat_timeout):
            return
        self._relaunch_or_end(change, batch, "no heartbeat", max_attempts)

    def _relaunch_or_end(self, change: _Change, batch: Batch, reason: str, max_attempts: int) -> None:
        """A running batch's run is gone: stop it if it was stopping, fail it past the limit, else run it again."""
        if batch.status == BatchStatus.STOPPING:
            log.warning("batch %s: run lost (%s) while stopping; it is stopped", batch.id, reason)
            self._end_run(change, batch.id, None)
        elif batch.run_attempts >= max_attempts:
            log.warning("batch %s: run lost (%s) %d times; the batch fails", batch.id, reason, batch.run_attempts)
            self._end_run(change, batch.id, f"run lost {batch.run_attempts} times (worker died or unreachable)")
        else:
            log.warning("batch %s: run lost (%s); dispatching it again", batch.id, reason)
            self._log(batch.id, f"run lost ({reason}); dispatching it again", level="warning")
            batch.lost_at = utcnow()
            self._dispatch(change, batch)

    def _promote_head(self, change: _Change) -> int | None:
        """Start the head of the queue if the slot is free; return its id."""
        if change.paused:
            return None
        token = uuid.uuid4().hex
        promoted: int | None = db.session.execute(_PROMOTE_HEAD, {"now": utcnow(), "token": token}).scalar()
        if promoted is None:
            return None
        change.after_commit.append(lambda: dispatch.send_run(promoted, token))
        change.publish("promoted", promoted)
        return promoted

    def _dispatch(self, change: _Change, batch: Batch) -> None:
        """Give a running batch a fresh fencing token and send its run again after commit."""
        token = uuid.uuid4().hex
        batch.dispatch_token = token
        batch.heartbeat_at = utcnow()
        db.session.execute(_RESET_RUNNING_ITEMS, {"id": batch.id})
        batch_id = batch.id
        change.after_commit.append(lambda: dispatch.send_run(batch_id, token))

    def _end_run(self, change: _Change, batch_id: int, error: str | None) -> str | None:
        """End the running batch in this queue transaction; return its new status (None if none runs)."""
        status = db.session.execute(_END_RUN, self._end_parameters(batch_id, error)).scalar()
        if status is not None:
            change.publish("finished", batch_id)
        return status

    @staticmethod
    def _end_parameters(
        batch_id: int,
        error: str | None,
        token: str | None = None,
        last_item: dict[str, Any] | None = None,
        release_lease: bool = False,
    ) -> dict[str, Any]:
        return {
            **_NO_LAST_ITEM,
            **(last_item or {}),
            "id": batch_id,
            "token": token,
            "error": error,
            "now": utcnow(),
            "lease_class": leases.LEASE_CLASS,
            "release_lease": release_lease,
        }

    @staticmethod
    def _set_paused(change: _Change, paused: bool, actor: str | None) -> None:
        change.paused = paused
        db.session.execute(
            update(QueueState)
            .where(QueueState.id == QUEUE_STATE_ID)
            .values(paused=paused, paused_by=actor, paused_at=utcnow() if paused else None)
        )

    @staticmethod
    def _locked_batch(batch_id: int) -> Batch:
        batch = None
        if storable_id(batch_id):
            batch = db.session.scalar(select(Batch).where(Batch.id == batch_id).with_for_update())
        if batch is None:
            raise NotFound(f"batch {batch_id} does not exist")
        return batch

    @staticmethod
    def _repaired_within(seconds: float) -> bool:
        """Whether some process ran a repair round in the last `seconds` (read without the lock)."""
        recent = db.session.scalar(
            text("SELECT repaired_at > now() - make_interval(secs => :gap) FROM queue_state WHERE id = :id"),
            {"id": QUEUE_STATE_ID, "gap": seconds},
        )
        db.session.rollback()
        return bool(recent)

    @staticmethod
    def _last_rank() -> int:
        return db.session.scalar(select(func.max(Batch.queue_rank))) or 0

    @staticmethod
    def _rank_for(batch_id: int, target: int) -> int:
        """A free rank that puts the batch at `target` among the other queued batches."""
        for _ in range(2):
            ranks: list[int] = list(db.session.scalars(_NEIGHBOUR_RANKS, {"id": batch_id, "skip": max(target - 2, 0)}))
            if target == 1:
                return ranks[0] - RANK_GAP
            before, after = ranks[0], ranks[1] if len(ranks) > 1 else None
            if after is None:
                return before + RANK_GAP
            if after - before > 1:
                return before + (after - before) // 2
            rank = QueueManager._respace_after(batch_id, before)
            if rank is not None:
                return rank
            db.session.execute(_RENUMBER, {"gap": RANK_GAP})
        raise RuntimeError("no free rank after renumbering the queue")

    @staticmethod
    def _respace_after(batch_id: int, before: int) -> int | None:
        """Make room right after `before` by spreading out the few batches behind it.

        Takes the shortest run of following batches whose ranks leave room for
        one more, spreads the run evenly over that room and returns the free
        rank at its front. None if no such run lies within RESPACE_WINDOW
        batches: the whole queue must be renumbered.
        """
        following = db.session.execute(
            _RANKS_AFTER, {"rank": before, "id": batch_id, "limit": RESPACE_WINDOW + 1}
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

    @staticmethod
    def _log(batch_id: int, message: str, level: str = "info") -> None:
        # Stamped now, not at flush: a later statement of the same change may write
        # its own line with a time taken before this flush, and logs read oldest first.
        db.session.add(BatchLog(batch_id=batch_id, message=message, level=level, at=utcnow()))


queue_manager = QueueManager()
