"""Chain promotion onto the end of every batch run.

Celery runs these in the pool child (or, for a killed child, the main process),
outside any app context, and swallows their exceptions; they may also fire
twice or not at all. So they do no database work and only publish the
promotion task, which is idempotent; the periodic reconciler covers the rest.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Task
from celery.signals import task_failure, task_success

from app.services.dispatch import CONTROL_QUEUE, PROMOTE_TASK, RUN_BATCH_TASK

log = logging.getLogger(__name__)


def _ended_a_run(sender: Task | None) -> bool:
    # Signals are connected for every task: compare names, or the promotion
    # task's own success would chain yet another promotion.
    return sender is not None and getattr(sender, "name", None) == RUN_BATCH_TASK


def _publish_promotion(sender: Task) -> None:
    for attempt in range(3):
        try:
            sender.app.send_task(PROMOTE_TASK, queue=CONTROL_QUEUE, ignore_result=True)
            return
        except Exception:
            log.warning("could not publish the promotion (attempt %d)", attempt + 1, exc_info=True)
    log.error("promotion not published; the reconciler will promote within its period")


@task_success.connect
def promote_after_success(sender: Task | None = None, **_: Any) -> None:
    """A run returned: the slot may be free, let the queue move."""
    if _ended_a_run(sender):
        _publish_promotion(sender)


@task_failure.connect
def promote_after_failure(sender: Task | None = None, **_: Any) -> None:
    """A run raised or its process died: the failure must not block the queue."""
    if _ended_a_run(sender):
        _publish_promotion(sender)
