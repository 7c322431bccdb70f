"""queue.promote_next, queue.recover_run and queue.reconcile: keep the queue moving."""

from celery import shared_task
from flask import current_app
from sqlalchemy.exc import OperationalError

from app.services.queue_manager import queue_manager

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
    return queue_manager.promote_next_batch()


# Sent instead of a promotion when a run's task failed: its process died (a pool
# child killed, out of memory) or it raised. Recovering at once beats waiting
# for the heartbeat timeout; the promotion is part of it.
@shared_task(name="queue.recover_run", soft_time_limit=30, time_limit=60, **_RETRY_WHILE_DATABASE_DOWN)
def recover_run(batch_id: int, token: str) -> int | None:
    """Dispatch a dead run's batch again (or end it), then promote the head if the slot is free."""
    return queue_manager.recover_dead_run(batch_id, token, max_attempts=current_app.config["BATCH_MAX_RUN_ATTEMPTS"])


# Run by beat every RECONCILE_INTERVAL seconds: the guarantee behind the signal chain.
# No retries: the next period is the retry.
@shared_task(name="queue.reconcile", soft_time_limit=30, time_limit=60)
def reconcile() -> int | None:
    """Recover a lost run and promote the head if the slot is free."""
    return queue_manager.recover_lost_run(
        heartbeat_timeout=current_app.config["BATCH_HEARTBEAT_TIMEOUT"],
        stop_grace=current_app.config["STOP_GRACE_SECONDS"],
        max_attempts=current_app.config["BATCH_MAX_RUN_ATTEMPTS"],
    )
