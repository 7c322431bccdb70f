"""Send Celery tasks by name, so app/ never imports tasks/."""

from __future__ import annotations

from celery import Celery
from flask import current_app

RUN_BATCH_TASK = "batches.run"
PROMOTE_TASK = "queue.promote_next"
RECONCILE_TASK = "queue.reconcile"
RECOVER_TASK = "queue.recover_run"
RUN_QUEUE = "batches"
CONTROL_QUEUE = "control"


def celery() -> Celery:
    """Return the Celery app bound to the current Flask app."""
    return current_app.extensions["celery"]


# Every send says ignore_result: without it Celery subscribes to the task's
# result channel on Redis before publishing (and unsubscribes later), two extra
# round trips between batches for a result nobody reads.


def send_run(batch_id: int, token: str) -> None:
    """Dispatch a batch's run; the token is both the task id and the batch's fencing token."""
    celery().send_task(RUN_BATCH_TASK, args=[batch_id, token], task_id=token, queue=RUN_QUEUE, ignore_result=True)


# A run handed back by a worker that is shutting down may meet a broker that is
# itself restarting: keep trying for half a minute before leaving it to the reconciler.
_PATIENT_RETRY = {"max_retries": 20, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 2.0}


def hand_back_run(batch_id: int, token: str) -> None:
    """Put a run that stopped between items back on the broker, under the same token, to resume there."""
    celery().send_task(
        RUN_BATCH_TASK,
        args=[batch_id, token],
        task_id=token,
        queue=RUN_QUEUE,
        ignore_result=True,
        retry=True,
        retry_policy=_PATIENT_RETRY,
    )


def revoke_run(token: str) -> None:
    """Hard-stop fallback: terminate the process running this dispatch."""
    celery().control.revoke(token, terminate=True, signal="SIGKILL")
