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
batch's run again under a new token (queue_repairs.restart_stalled_run), then
ends its own pool process, the way a hard stop ends a run.

Read in order: run.py (the run from lease to end), claim.py (taking the batch
over), watcher.py (stops, heartbeat, time limits), items.py (the item loop,
each item's start and the outcomes written in groups).
"""

from app.services.runs.run import RunOutcome, run_batch

__all__ = ["RunOutcome", "run_batch"]
