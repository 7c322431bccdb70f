"""queue.promote_next, queue.recover_run and queue.reconcile: keep the queue moving."""

import logging

from celery import shared_task
from flask import current_app
from sqlalchemy.exc import OperationalError

from app.services import queue_manager, queue_repairs
from app.services.queue_repairs import LeaseStillHeld

log = logging.getLogger(__name__)

# While PostgreSQL is unreachable these tasks are retried with a growing delay
# (1, 2, 4 ... 30 s), so a promotion is not lost to a database restart.
_RETRY_WHILE_DATABASE_DOWN = {
    "autoretry_for": (OperationalError,),
    "retry_backoff": 1,
    "retry_backoff_max": 30,
    "retry_jitter": False,
    "max_retries": 12,
}


# Short and idempotent: safe to run twice, concurrently, or late.
@shared_task(name="queue.promote_next", soft_time_limit=30, time_limit=60, **_RETRY_WHILE_DATABASE_DOWN)
def promote_next() -> int | None:
    """Start the head of the queue if the running slot is free."""
    promoted = queue_manager.promote_next_batch()
    if promoted is not None:
        log.info("queue: promoted batch %s", promoted)
    return promoted


# A dead process's lease is freed by PostgreSQL a moment after the process dies:
# a recovery that still finds it held looks again this often (within the retries).
LEASE_RETRY_SECONDS = 0.25


# Sent instead of a promotion when a run's task failed: its process died (a pool
# child killed, out of memory) or it raised. Recovering at once beats waiting
# for the heartbeat timeout; the promotion is part of it.
@shared_task(name="queue.recover_run", bind=True, soft_time_limit=30, time_limit=60, **_RETRY_WHILE_DATABASE_DOWN)
def recover_run(self, batch_id: int, token: str) -> int | None:  # type: ignore[no-untyped-def]
    """Dispatch a dead run's batch again (or end it), then promote the head if the slot is free."""
    try:
        return queue_repairs.recover_dead_run(
            batch_id, token, max_attempts=current_app.config["BATCH_MAX_RUN_ATTEMPTS"]
        )
    except LeaseStillHeld as exc:
        raise self.retry(exc=exc, countdown=LEASE_RETRY_SECONDS) from exc


# The guarantee behind the signal chain runs as a timer inside every worker and
# beat (workers/liveness.py), not as a task, so that Flower's task list shows
# work rather than housekeeping. The task stays for a round on demand (a
# script, a test); no retries: the timers' next round is the retry.
@shared_task(name="queue.reconcile", soft_time_limit=30, time_limit=60)
def reconcile() -> int | None:
    """Run one repair round now: recover a lost run and promote the head if the slot is free."""
    return queue_repairs.recover_lost_run(
        heartbeat_timeout=current_app.config["BATCH_HEARTBEAT_TIMEOUT"],
        stop_grace=current_app.config["STOP_GRACE_SECONDS"],
        max_attempts=current_app.config["BATCH_MAX_RUN_ATTEMPTS"],
    )
