"""batches.run: execute the running batch."""

import logging

from celery import shared_task
from flask import current_app

from app.services import liveness
from app.services.runs import run_batch

log = logging.getLogger(__name__)


# acks_late (from celeryconfig): a vanished worker's message is delivered again,
# and the lease turns a duplicate into a no-op. No Celery time limit: a batch may
# legitimately take hours, and a task-wide limit would kill it mid-item. Each
# item has its own limit instead (the batch's item_timeout, enforced by the
# run's watcher in app/services/runs/watcher.py: the item fails and the batch goes on),
# and stopping is the operator's tool. No retries: the reconciler re-dispatches
# a lost run.
@shared_task(name="batches.run", bind=True, max_retries=0)
def run(self, batch_id: int, token: str) -> str:  # type: ignore[no-untyped-def]
    """Run a batch's pending items if this dispatch still owns it."""
    outcome = run_batch(
        batch_id,
        token,
        heartbeat_timeout=current_app.config["BATCH_HEARTBEAT_TIMEOUT"],
        worker_name=liveness.this_worker or self.request.hostname,
    )
    # With the request id of the request that started it (the log context, workers/task_logs.py).
    log.info("batch %s: run %s", batch_id, outcome.value)
    return outcome
