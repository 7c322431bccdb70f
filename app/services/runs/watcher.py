"""The run's watcher, a thread beside the item loop: it notices a stop, keeps the heartbeat fresh and holds each
item to its time limit, ending the run itself when a processor ignores that limit."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable

from flask import Flask
from sqlalchemy import Connection, func, select, update

from app import metrics
from app.models import Batch, BatchStatus, ItemStatus
from app.services import queue_repairs
from app.services.runs.context import ItemContext, item_lines, timed_out_error

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
        # Set by the item loop: writes the outcomes it has not written yet, on the
        # connection given; called while an item has run a poll round or longer.
        self.during_long_item: Callable[[Connection], None] | None = None
        self._finished = threading.Event()
        self._item: ItemContext | None = None
        # Orders the item's end (end_item) against the watcher's decisions about it.
        self._item_lock = threading.Lock()
        owned = (Batch.id == batch_id, Batch.dispatch_token == token)
        self._heartbeat = update(Batch).where(*owned).values(heartbeat_at=func.now())
        self._look = select(Batch.status, Batch.dispatch_token).where(Batch.id == batch_id)

    def run(self) -> None:
        # The claim has just stamped the heartbeat and seen the batch in
        # progress: the first look waits a round instead of competing with the
        # first item for the database at the busiest moment of the handoff.
        last_beat = time.monotonic()
        while not self._finished.wait(STOP_POLL_SECONDS):
            try:
                now = time.monotonic()
                if now - last_beat >= self.heartbeat_every:
                    self.connection.execute(self._heartbeat)
                    last_beat = now
                row = self.connection.execute(self._look).one_or_none()
                if row is None or row.status != BatchStatus.IN_PROGRESS or row.dispatch_token != self.token:
                    self._see_stop()
                self._write_during_long_item()
            except Exception:  # a blip must not kill the watcher; the next round retries
                log.warning("watcher of batch %s could not reach the database", self.batch_id, exc_info=True)
            if self._enforce_time_limit():
                return  # the batch belongs to the next run now

    def _write_during_long_item(self) -> None:
        """Write the item loop's outcomes so far while its item in hand takes a while, so none waits for it."""
        write, item = self.during_long_item, self._item
        if write is not None and item is not None and time.monotonic() - item.started >= STOP_POLL_SECONDS:
            with self.app.app_context():  # its live hint needs the app
                write(self.connection)

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
                queue_repairs.restart_stalled_run(self.connection, batch_id, self.token, item_id, error, lines)
        except Exception:  # the database is out of reach: the next round tries again
            log.warning("batch %s: could not end its stalled run", self.batch_id, exc_info=True)
            return False
        metrics.record_item(ctx.processor, ItemStatus.FAILED.value, time.monotonic() - ctx.started)
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
