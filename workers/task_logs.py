"""The worker's and beat's side of the log context and of LOG_FORMAT=json.

Every task runs in a log context of its own: its `task_id`, its batch's id
(the first argument of a run or a recovery) and the `request_id` its message
carries (app/tasking.py puts it there). The context is entered at task_prerun
and left at task_postrun, which Celery sends after task_success and
task_failure: the promotion those publish (workers/signals.py) still carries
the run's request id, and Celery's own "succeeded" line still names it.

With LOG_FORMAT=json, Celery's handlers (main process, pool children, beat)
keep their streams and get the JSON formatter, the start banners, which are
not log lines, are left out, and the worker's shutdown notices, which Celery
writes straight to a file descriptor, are written as JSON lines.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from contextlib import suppress
from contextvars import Token
from typing import Any

import celery.apps.worker
from celery import Celery, Task
from celery.signals import after_setup_logger, after_setup_task_logger, task_postrun, task_prerun

from app import logging_setup
from app.logging_setup import LogContext
from app.services.dispatch import RECOVER_TASK, RUN_BATCH_TASK
from app.tasking import REQUEST_ID_HEADER

# The tasks whose first argument is a batch's id.
BATCH_TASKS = (RUN_BATCH_TASK, RECOVER_TASK)

# The contexts of the tasks running in this process, by task id and thread: prerun
# and postrun of one task run in the same thread, but a threads pool runs several
# (two deliveries of one message among them, now and then).
_entered: dict[tuple[str, int], Token[LogContext]] = {}


@task_prerun.connect
def enter_task_context(sender: Task | None = None, task_id: str | None = None, args: Any = None, **_: Any) -> None:
    """Log the task's lines with its id, its batch and the request id its message carries."""
    if sender is None or task_id is None:
        return
    batch_id = args[0] if getattr(sender, "name", None) in BATCH_TASKS and args else None
    _entered[task_id, threading.get_ident()] = logging_setup.enter(
        request_id=getattr(sender.request, REQUEST_ID_HEADER, None), task_id=task_id, batch_id=batch_id
    )


@task_postrun.connect
def leave_task_context(task_id: str | None = None, **_: Any) -> None:
    token = _entered.pop((task_id, threading.get_ident()), None) if task_id is not None else None
    if token is not None:
        logging_setup.leave(token)


def install(celery_app: Celery, log_format: str) -> None:
    """With JSON logs: JSON from Celery's handlers and no start banners."""
    if log_format != "json":
        return
    after_setup_logger.connect(_json_handlers, weak=False)
    after_setup_task_logger.connect(_json_handlers, weak=False)
    _quiet_banners(celery_app)
    celery.apps.worker.safe_say = _say_as_json


def _json_handlers(logger: logging.Logger, **_: Any) -> None:
    for handler in logger.handlers:
        logging_setup.use_json(handler)


def _quiet_banners(celery_app: Celery) -> None:
    # Celery prints its worker and beat banners with print(), outside logging;
    # `celery -q` leaves them out, and this does the same from the app.
    worker_base, beat_base = celery_app.Worker, celery_app.Beat

    class QuietWorker(worker_base):  # type: ignore[misc,valid-type]
        def on_before_init(self, quiet: bool = False, **kwargs: Any) -> None:
            super().on_before_init(quiet=True, **kwargs)

    class QuietBeat(beat_base):  # type: ignore[misc,valid-type]
        def __init__(self, *args: Any, quiet: bool = False, **kwargs: Any) -> None:
            super().__init__(*args, quiet=True, **kwargs)

    celery_app.Worker = QuietWorker
    celery_app.Beat = QuietBeat


def _say_as_json(msg: str, f: Any = sys.__stderr__) -> None:
    # What Celery's safe_say does (it runs in signal handlers: one os.write, no
    # logging locks), as a JSON line: "worker: Warm shutdown (MainProcess)" and the like.
    if f is None or f.fileno() is None:
        return
    with suppress(OSError):  # as Celery's own: a lost notice must never abort a shutdown
        os.write(f.fileno(), logging_setup.json_line("celery.apps.worker", logging.INFO, msg.strip()).encode())
