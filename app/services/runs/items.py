"""The item loop: each pending item through the processor under its time limit, and each item's write."""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from app import processors
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


class Fenced(Exception):
    """This run's dispatch token is no longer the batch's: a newer run owns it."""


@dataclass
class ItemsEnd:
    """How the item loop ended: an error for the batch, the last item still to be written with the batch's end,
    or a hand-back because the worker is shutting down."""

    error: str | None = None
    last_item: ItemWrite = queue_statements.NO_ITEM
    handed_back: bool = False


def run_items(claimed: Claimed, token: str, watcher: Watcher) -> ItemsEnd:
    """Run the items, one at a time, until they are done, a stop comes or the worker shuts down.

    The last item's outcome is written in the statement that ends the batch
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
        written = item_write(outcome, ctx)
        if index == len(items) - 1 and outcome.status is not ItemStatus.PENDING:
            return ItemsEnd(last_item=written)
        if not _write_item(batch_id, token, written):
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


# Guarantees: no item starts after a stop, nor for a run that no longer owns
# the batch. The batch's row lock orders this against a stop.
_START_ITEM = statement(
    """
    WITH own AS (
        SELECT id FROM batches
        WHERE id = :batch_id AND dispatch_token = :token AND status = :status_in_progress FOR UPDATE
    )
    UPDATE batch_items SET status = :item_status_running, attempts = attempts + 1, started_at = :now, error = NULL
    WHERE id = :item_id AND batch_id IN (SELECT id FROM own)
    RETURNING attempts
    """
)


def _start_item(batch_id: int, token: str, item_id: int) -> int | None:
    """Mark the item running unless a stop (or a newer run) came first; return its attempt number."""
    attempt: int | None = db.session.execute(
        _START_ITEM, {"batch_id": batch_id, "token": token, "item_id": item_id, "now": utcnow()}
    ).scalar()
    db.session.commit()
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


def _write_item(batch_id: int, token: str, written: ItemWrite) -> bool:
    """Write the outcome, the batch's progress and the log lines in the session's transaction.

    False when the run no longer owns the batch (nothing is written then).
    """
    parameters = {**written.parameters(), "batch_id": batch_id, "token": token}
    return bool(db.session.execute(queue_statements.FINISH_ITEM, parameters).scalar())
