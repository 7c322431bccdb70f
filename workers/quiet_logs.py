"""Keep the reconciler task out of the worker's INFO log.

The repair rounds run on timers inside every worker and beat (workers/liveness.py),
not as tasks; queue.reconcile is sent only on demand (a script, a test). Celery
logs each one's receipt and success at INFO: sent often, they would bury the
lines operators read (runs and promotions). Its warnings and errors, and
everything about other tasks, still show.
"""

from __future__ import annotations

import logging

from celery.signals import after_setup_logger

from app.services.dispatch import RECONCILE_TASK


class SkipRoutineReconcile(logging.Filter):
    """Drop INFO records about the reconciler task; keep anything louder."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.INFO:
            return True
        return f"{RECONCILE_TASK}[" not in record.getMessage()


@after_setup_logger.connect
def quiet_reconcile(logger: logging.Logger, **_: object) -> None:
    for handler in logger.handlers:
        handler.addFilter(SkipRoutineReconcile())
