"""Chain promotion onto the end of every batch run.

Celery runs these in the pool child (or, for a killed child, the main process),
outside any app context, and swallows their exceptions; they may also fire
twice or not at all. So they do no database work and only publish a task:
queue.promote_next after a run returned, queue.recover_run after it raised or
its process died (the recovery promotes too). Both are idempotent; the repair
rounds every worker and beat run on timers (workers/liveness.py) cover the rest.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Task
from celery.signals import task_failure, task_success

from app.services.dispatch import CONTROL_QUEUE, PROMOTE_TASK, RECOVER_TASK, RUN_BATCH_TASK

log = logging.getLogger(__name__)


def _ended_a_run(sender: Task | None) -> bool:
    # Signals are connected for every task: compare names, or the promotion
    # task's own success would chain yet another promotion.
    return sender is not None and getattr(sender, "name", None) == RUN_BATCH_TASK


# Publishing waits out a broker restart of a few seconds (kombu's retry policy);
# past that the promotion is lost and the reconciler promotes within its period.
_PUBLISH_RETRY = {"max_retries": 10, "interval_start": 0.1, "interval_step": 0.3, "interval_max": 1.0}


def _publish(sender: Task, name: str, args: list[Any] | None = None) -> None:
    try:
        sender.app.send_task(
            name, args=args, queue=CONTROL_QUEUE, ignore_result=True, retry=True, retry_policy=_PUBLISH_RETRY
        )
    except Exception:
        log.exception("could not publish %s; the reconciler will repair the queue within its period", name)


@task_success.connect
def promote_after_success(sender: Task | None = None, **_: Any) -> None:
    """A run returned: the slot may be free, let the queue move."""
    if _ended_a_run(sender):
        _publish(sender, PROMOTE_TASK)


@task_failure.connect
def recover_after_failure(sender: Task | None = None, args: Any = None, **_: Any) -> None:
    """A run raised or its process died: recover it now rather than at the heartbeat timeout.

    The recovery promotes the head too, so a failure never blocks the queue.
    """
    if not _ended_a_run(sender):
        return
    if isinstance(args, list | tuple) and len(args) == 2:
        _publish(sender, RECOVER_TASK, list(args))
    else:  # no arguments to recover with: at least let the queue move
        _publish(sender, PROMOTE_TASK)
