"""queue.promote_next and queue.reconcile: keep the queue moving."""

from celery import shared_task
from flask import current_app

from app.services.queue_manager import queue_manager


# Short and idempotent: safe to run twice, concurrently, or late.
@shared_task(name="queue.promote_next", soft_time_limit=30, time_limit=60)
def promote_next() -> int | None:
    """Start the head of the queue if the running slot is free."""
    return queue_manager.promote_next_batch()


# Run by beat every few seconds: the guarantee behind the signal chain.
@shared_task(name="queue.reconcile", soft_time_limit=30, time_limit=60)
def reconcile() -> int | None:
    """Recover a lost run and promote the head if the slot is free."""
    return queue_manager.recover_lost_run(
        heartbeat_timeout=current_app.config["BATCH_HEARTBEAT_TIMEOUT"],
        stop_grace=current_app.config["STOP_GRACE_SECONDS"],
    )
