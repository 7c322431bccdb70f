"""Executing a batch: its pending items, one at a time, through its processor.

A run is guarded twice. Its lease (an advisory lock on its own connection)
keeps a duplicate delivery of the same message from running beside it, and its
dispatch token fences it: every write checks that the batch still carries the
token this run was dispatched with, so a run presumed lost and replaced can't
overwrite the newer one. The batch's final status is committed here, before
the task returns, because Celery's signals are not a delivery guarantee.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, select, text, update

from app import processors
from app.extensions import db
from app.models import Batch, BatchItem, BatchLog, BatchStatus, ItemStatus, Profile
from app.models._types import utcnow
from app.processors import ItemFailed, ProfileData, StopRequested
from app.services import events, leases
from app.services.queue_manager import queue_manager

log = logging.getLogger(__name__)

# How often the watcher looks for a stop: the built-in processors notice it within this.
STOP_POLL_SECONDS = 0.2


class Fenced(Exception):
    """This run's dispatch token is no longer the batch's: a newer run owns it."""


@dataclass
class PendingItem:
    id: int
    position: int
    profile: ProfileData


class Watcher(threading.Thread):
    """Beside the run: notices a stop quickly and keeps the heartbeat fresh."""

    def __init__(self, connection: Connection, batch_id: int, token: str, heartbeat_every: float) -> None:
        super().__init__(name=f"batch-{batch_id}-watcher", daemon=True)
        self.connection = connection
        self.batch_id = batch_id
        self.token = token
        self.heartbeat_every = heartbeat_every
        self.stop_seen = threading.Event()
        self._finished = threading.Event()

    def run(self) -> None:
        last_beat = 0.0
        while not self._finished.is_set():
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
                    self.stop_seen.set()
            except Exception:  # a blip must not kill the watcher; the next round retries
                log.warning("watcher of batch %s could not reach the database", self.batch_id, exc_info=True)
            self._finished.wait(STOP_POLL_SECONDS)

    def finish(self) -> None:
        self._finished.set()
        self.join(timeout=5)


class ItemContext:
    """The RunContext a processor gets."""

    def __init__(self, batch_id: int, watcher: Watcher) -> None:
        self.batch_id = batch_id
        self._watcher = watcher
        self.lines: list[tuple[str, str]] = []

    def stop_requested(self) -> bool:
        return self._watcher.stop_seen.is_set()

    def wait(self, seconds: float) -> bool:
        return self._watcher.stop_seen.wait(seconds)

    def log(self, message: str, level: str = "info") -> None:
        self.lines.append((level, message))


def run_batch(batch_id: int, token: str, heartbeat_timeout: float = 30.0) -> str:
    """Run the batch's pending items and commit its end; return what happened, in a word."""
    with db.engine.connect() as lease_connection:
        lease_connection = lease_connection.execution_options(isolation_level="AUTOCOMMIT")
        if not leases.try_acquire(lease_connection, batch_id):
            return "duplicate"
        try:
            return _run_leased(lease_connection, batch_id, token, heartbeat_timeout)
        finally:
            db.session.rollback()
            leases.release(lease_connection, batch_id)


def _run_leased(lease_connection: Connection, batch_id: int, token: str, heartbeat_timeout: float) -> str:
    batch = _claim(batch_id, token)
    if batch is None:
        return "stale"
    watcher = Watcher(lease_connection, batch_id, token, heartbeat_every=max(1.0, heartbeat_timeout / 6))
    error: str | None = None
    try:
        watcher.start()
        error = _run_items(batch, token, watcher)
    except Fenced:
        return "fenced"
    except Exception as exc:  # the processor loop itself broke: the batch fails, the queue goes on
        log.exception("run of batch %s crashed", batch_id)
        db.session.rollback()
        error = f"run crashed: {type(exc).__name__}: {exc}"
    finally:
        watcher.finish()
    finished = queue_manager.finish_run(batch_id, token, error)
    return finished.status if finished is not None else "fenced"


def _claim(batch_id: int, token: str) -> Batch | None:
    """Check that this dispatch still owns the batch and count the attempt."""
    batch = db.session.scalar(select(Batch).where(Batch.id == batch_id).with_for_update())
    if batch is None or batch.dispatch_token != token or batch.status != BatchStatus.IN_PROGRESS:
        db.session.rollback()
        return None
    batch.run_attempts += 1
    batch.heartbeat_at = utcnow()
    attempt = f" (attempt {batch.run_attempts})" if batch.run_attempts > 1 else ""
    db.session.add(BatchLog(batch_id=batch_id, message=f"run began on {socket.gethostname()}{attempt}"))
    db.session.commit()
    return batch


def _pending_items(batch_id: int) -> list[PendingItem]:
    rows = db.session.execute(
        select(BatchItem.id, BatchItem.position, Profile.id, Profile.name, Profile.attributes)
        .join(Profile, Profile.id == BatchItem.profile_id)
        .where(BatchItem.batch_id == batch_id, BatchItem.status == ItemStatus.PENDING)
        .order_by(BatchItem.position)
    ).all()
    db.session.commit()
    return [PendingItem(row[0], row[1], ProfileData(row[2], row[3], row[4] or {})) for row in rows]


def _run_items(batch: Batch, token: str, watcher: Watcher) -> str | None:
    processor = processors.get(batch.processor)
    if processor is None:
        return f"processor {batch.processor!r} is not registered on this worker"
    batch_id, total, parameters = batch.id, batch.total_items, dict(batch.parameters)
    for item in _pending_items(batch_id):
        if watcher.stop_seen.is_set() or not _start_item(batch_id, token, item.id):
            break
        ctx = ItemContext(batch_id, watcher)
        try:
            result = processor.process(item.profile, parameters, ctx)
        except StopRequested:
            _finish_item(batch_id, token, item, None, None, ctx, total, stopped=True)
            break
        except ItemFailed as exc:
            _finish_item(batch_id, token, item, None, str(exc) or "failed", ctx, total)
        except Exception as exc:  # a processor's bug fails its item, not the whole run
            log.exception("processor %s failed on profile %s", processor.name, item.profile.id)
            _finish_item(batch_id, token, item, None, f"{type(exc).__name__}: {exc}", ctx, total)
        else:
            _finish_item(batch_id, token, item, result, None, ctx, total)
    return None


def _lock_own_batch(batch_id: int, token: str) -> str:
    """Lock the batch row if this run still owns it; return its status."""
    status = db.session.execute(
        select(Batch.status).where(Batch.id == batch_id, Batch.dispatch_token == token).with_for_update()
    ).scalar()
    if status is None:
        db.session.rollback()
        raise Fenced()
    return status


def _start_item(batch_id: int, token: str, item_id: int) -> bool:
    """Mark the item running unless a stop came first (the row lock orders the two)."""
    if _lock_own_batch(batch_id, token) != BatchStatus.IN_PROGRESS:
        db.session.rollback()
        return False
    db.session.execute(
        update(BatchItem)
        .where(BatchItem.id == item_id)
        .values(status=ItemStatus.RUNNING.value, attempts=BatchItem.attempts + 1, started_at=utcnow(), error=None)
    )
    db.session.commit()
    return True


def _finish_item(
    batch_id: int,
    token: str,
    item: PendingItem,
    result: Any,
    error: str | None,
    ctx: ItemContext,
    total: int,
    stopped: bool = False,
) -> None:
    """Record the item's outcome, the batch's progress and the log in one transaction."""
    _lock_own_batch(batch_id, token)
    now = utcnow()
    if stopped:
        status, message = ItemStatus.PENDING, "interrupted by the stop; left pending"
    elif error is None:
        status, message = ItemStatus.SUCCEEDED, "succeeded"
    else:
        status, message = ItemStatus.FAILED, f"failed: {error}"
    db.session.execute(
        update(BatchItem)
        .where(BatchItem.id == item.id)
        .values(
            status=status.value,
            result=result,
            error=error,
            started_at=None if stopped else BatchItem.started_at,
            finished_at=None if stopped else now,
        )
    )
    if status is ItemStatus.SUCCEEDED:
        db.session.execute(
            update(Batch).where(Batch.id == batch_id).values(succeeded_items=Batch.succeeded_items + 1)
        )
    elif status is ItemStatus.FAILED:
        db.session.execute(update(Batch).where(Batch.id == batch_id).values(failed_items=Batch.failed_items + 1))
    for level, line in ctx.lines:
        db.session.add(BatchLog(batch_id=batch_id, level=level, message=f"{item.profile.name}: {line}", at=now))
    db.session.add(
        BatchLog(
            batch_id=batch_id,
            level="error" if status is ItemStatus.FAILED else "info",
            message=f"item {item.position + 1}/{total} ({item.profile.name}) {message}",
            at=now,
        )
    )
    db.session.commit()
    events.publish("item", batch_id)
