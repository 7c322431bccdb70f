"""The item loop: each pending item through the processor under its time limit, its outcome written in a group.

Each item is started on its own (one statement, see _START_ITEM), but the
outcomes are written in groups: kept in memory as items end, and written in
one statement with the batch's counters and the items' log lines, with one
live hint, once the group holds GROUP_MAX_ITEMS items or its oldest outcome is
GROUP_SECONDS old (checked as each item ends), and by the run's watcher while
an item has run for more than STOP_POLL_SECONDS (0.2 s): items slower than
that are written one by one, and no outcome waits for a slow item after it. For a batch of fast items that is one round
trip per item instead of five (a start and its commit, an outcome and its
commit, a hint), bench/items.py.

Why the guarantees hold:

- *No item begins after a stop is committed*: each item begins only after its
  own start statement, which is ordered against the stop by the batch's row
  lock and sees it (no item begins once a stop has locked the batch).
- *A stop halts within a second*: the next item's start sees it at once, and
  the item in hand learns it from the watcher within 0.2 s; the group's
  outcomes so far are written before the run ends.
- *Items run at least once; a succeeded item never runs again*: an item's
  start is committed before it runs and its outcome once its group is written.
  The next run's claim takes the items still pending or running: one recorded
  as succeeded is never run again, and one whose outcome was lost with its
  group (the process died) is still running and runs again (its attempt
  counted). A crash redoes at most the item in hand and the items that ended
  within the last GROUP_SECONDS (a few tenths of a second beside a slow
  item). A worker's shutdown writes the group after the item in hand, before
  handing the batch back: nothing is redone then.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from app import metrics, processors
from app.extensions import db
from app.models import ItemStatus
from app.models._types import utcnow
from app.processors import ItemFailed, ItemKey, StopRequested
from app.processors.base import Processor
from app.services import events, queue_statements
from app.services.queue_statements import ItemWrite, statement
from app.services.runs.claim import Claimed, PendingItem
from app.services.runs.context import ItemContext, item_lines, timed_out_error
from app.services.runs.watcher import Watcher

log = logging.getLogger(__name__)

# Set in a pool process whose worker is shutting down (SIGTERM, see
# workers/hand_back.py): the run lets its current item finish, then hands the
# batch back to the broker under the same token, to resume where it stopped.
shutdown_requested = threading.Event()

# A group's outcomes are written once its oldest is this old, or it holds this
# many: what a crash can make run again, and how stale the progress may look.
GROUP_SECONDS = 0.03
GROUP_MAX_ITEMS = 100


class Fenced(Exception):
    """This run's dispatch token is no longer the batch's: a newer run owns it."""


@dataclass
class ItemsEnd:
    """How the item loop ended: an error for the batch, the last item still to be written with the batch's end,
    or a hand-back because the worker is shutting down."""

    error: str | None = None
    last_item: ItemWrite = queue_statements.NO_ITEM
    handed_back: bool = False
    last_seconds: float = 0.0  # how long the last item took, counted once the batch's end is written


@dataclass
class Finished:
    """An item that ran, its outcome not written yet."""

    written: ItemWrite
    seconds: float


class Unwritten:
    """Outcomes not written yet, from the oldest: written by the loop between items once due, or by the watcher
    while an item runs long (so an item's outcome never waits for a slow item after it)."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.finished: list[Finished] = []
        self.since = 0.0  # time.monotonic() when the oldest ended
        self._lock = threading.Lock()  # the loop's thread and the watcher's

    def add(self, done: Finished) -> bool:
        """Keep an outcome; say whether they are due to be written."""
        with self._lock:
            if not self.finished:
                self.since = time.monotonic()
            self.finished.append(done)
            return len(self.finished) >= GROUP_MAX_ITEMS or time.monotonic() - self.since >= GROUP_SECONDS

    def write(self, connection: Connection) -> None:
        """Write them (raising Fenced, and keeping them, if the run no longer owns the batch)."""
        with self._lock:
            if self.finished:
                _write_group(self.run, connection, self.finished)
                self.finished = []


@dataclass
class Run:
    """What the item loop works with."""

    claimed: Claimed
    token: str
    watcher: Watcher
    processor: Processor
    connection: Connection  # autocommit, the loop's own


def run_items(claimed: Claimed, token: str, watcher: Watcher) -> ItemsEnd:
    """Run the items, one at a time, until they are done, a stop comes or the worker shuts down.

    The run's last item, when no other outcome waits to be written with it, is
    written in the statement that ends the batch (one commit fewer between this
    batch and the next, the whole run of a single-item batch); every other
    outcome is written with its group.
    """
    processor = processors.get(claimed.processor)
    if processor is None:
        return ItemsEnd(error=f"processor {claimed.processor!r} is not registered on this worker")
    # Autocommit: each of the loop's statements is a transaction of its own, so
    # an item's start holds its lock on the batch only while it runs.
    with db.engine.connect() as connection:
        run = Run(claimed, token, watcher, processor, connection.execution_options(isolation_level="AUTOCOMMIT"))
        unwritten = Unwritten(run)
        watcher.during_long_item = unwritten.write
        try:
            return _run_items(run, unwritten)
        finally:
            watcher.during_long_item = None


def _run_items(run: Run, unwritten: Unwritten) -> ItemsEnd:
    claimed = run.claimed
    for index, item in enumerate(claimed.items):
        attempt, started = item.attempts + 1, claimed.claimed_at  # the claim started the first item
        if index > 0 or not claimed.first_started:
            if shutdown_requested.is_set():
                unwritten.write(run.connection)
                return ItemsEnd(handed_back=True)
            now, started = utcnow(), time.monotonic()
            begun = None if run.watcher.stop_seen.is_set() else _start_item(run, item.id, now)
            if begun is None:
                break
            attempt = begun
        key = ItemKey(claimed.batch_id, item.profile.id, attempt)
        ctx = ItemContext(key, item, claimed.total, claimed.item_timeout, started, run.processor.name)
        outcome = _process_in_time(run.processor, claimed.parameters, ctx, run.watcher)
        done = Finished(item_write(outcome, ctx), time.monotonic() - started)
        stopped = outcome.status is ItemStatus.PENDING  # the processor let go for a stop
        if index == len(claimed.items) - 1 and not stopped and not unwritten.finished:
            return ItemsEnd(last_item=done.written, last_seconds=done.seconds)
        if unwritten.add(done) or stopped:
            unwritten.write(run.connection)
        if stopped:
            break
    unwritten.write(run.connection)
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


# Guarantees: no item starts after a stop, nor for a run that no longer owns
# the batch. Its share lock on the batch's row conflicts with the row lock a
# stop takes (and every other writer of the batch's status or token), so it is
# ordered against the stop: one that comes while a stop holds the batch waits
# for it, then finds the batch stopping and starts nothing. On the loop's
# autocommit connection, the lock lasts only as long as the statement, so a
# stop never waits for an item in hand.
_START_ITEM = statement(
    """
    WITH own AS (
        SELECT id FROM batches
        WHERE id = :batch_id AND dispatch_token = :token AND status = :status_in_progress FOR KEY SHARE
    )
    UPDATE batch_items SET status = :item_status_running, attempts = attempts + 1, started_at = :now, error = NULL
    WHERE id = :item_id AND batch_id IN (SELECT id FROM own)
    RETURNING attempts
    """
)


def _start_item(run: Run, item_id: int, now: datetime) -> int | None:
    """Mark the item running unless a stop (or a newer run) came first; return its attempt number."""
    parameters = {"batch_id": run.claimed.batch_id, "token": run.token, "item_id": item_id, "now": now}
    attempt: int | None = run.connection.execute(_START_ITEM, parameters).scalar()
    return attempt


def item_write(outcome: Outcome, ctx: ItemContext) -> ItemWrite:
    """The item's outcome as it is written, stamped now that the processor finished."""
    now, interrupted = utcnow(), outcome.status is ItemStatus.PENDING
    if interrupted:
        message = "interrupted by the stop; left pending"
    elif outcome.status is ItemStatus.SUCCEEDED:
        message = "succeeded"
    else:
        message = f"failed: {outcome.error}"
    return ItemWrite(
        item_id=ctx.pending.id,
        item_status=outcome.status.value,
        item_result=json.dumps(outcome.result) if outcome.result is not None else None,
        item_error=outcome.error,
        item_interrupted=interrupted,
        item_finished_at=None if interrupted else now,
        item_at=now,
        succeeded=int(outcome.status is ItemStatus.SUCCEEDED),
        failed=int(outcome.status is ItemStatus.FAILED),
        lines=json.dumps(item_lines(ctx, outcome.status, message)),
    )


def record_item(processor: str, written: ItemWrite, seconds: float) -> None:
    """Count an item's outcome in the metrics, once it is committed."""
    outcome = "interrupted" if written.item_interrupted else str(written.item_status)
    metrics.record_item(processor, outcome, seconds)


def _write_group(run: Run, connection: Connection, finished: list[Finished]) -> None:
    """Write the outcomes in one statement (its own transaction, on an autocommit connection), count, announce.

    Raises Fenced when the run no longer owns the batch (nothing is written then).
    """
    rows: list[dict[str, Any]] = []
    lines: list[dict[str, Any]] = []
    for done in finished:
        written = done.written
        rows.append(
            {
                "id": written.item_id,
                "status": written.item_status,
                "result": written.item_result,
                "error": written.item_error,
                "finished_at": None if written.item_finished_at is None else written.item_finished_at.isoformat(),
            }
        )
        at = written.item_at.isoformat() if written.item_at else None
        lines.extend({"at": at, **line} for line in json.loads(written.lines))
    batch_id = run.claimed.batch_id
    parameters = {"batch_id": batch_id, "token": run.token, "items": json.dumps(rows), "lines": json.dumps(lines)}
    if not connection.execute(queue_statements.FINISH_ITEMS, parameters).scalar():
        raise Fenced()
    for done in finished:
        record_item(run.processor.name, done.written, done.seconds)
    events.publish("item", batch_id)
