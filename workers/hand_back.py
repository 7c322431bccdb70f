"""Worker shutdown during a batch run: finish the current item, then hand the batch back.

honcho and systemd send SIGTERM to the worker's whole process group at once. A
stock prefork pool child then dies mid-item (or, with REMAP_SIGTERM=SIGQUIT,
ignores it and keeps starting items until the cold shutdown kills it). While a
batch run executes, our pool child instead asks the run to stop after the item
in hand and to put the batch back on the broker under the same token; the main
process meanwhile waits out its soft-shutdown time. When only the main process
is signalled (`kill PID`, Ctrl-C), it passes SIGTERM on to its pool processes,
so the run hands back all the same. Outside runs, billiard's own handling
applies. billiard sets a child's signals after the worker_process_init signal,
so the handler is installed per run instead.

Why Celery's own soft shutdown (5.5+, celery/celery#9213) is not enough: it
waits a bounded time, then the cold shutdown kills the task wherever it is and
puts its message back; a batch run has no "between items" for it, so an item is
cut off and done again. SIGTERM reaching prefork children directly ends them
mid-task (celery/celery#2700). tests/faults/test_worker_faults.py's SIGTERM tests
fail without this module on the pinned Celery (items cut off and redone, or
more items started after the signal).
"""

from __future__ import annotations

import os
import signal
import threading
from contextlib import suppress
from functools import partial
from types import FrameType
from typing import Any

from billiard.process import active_children, current_process
from celery import Task
from celery.signals import task_postrun, task_prerun, worker_process_init, worker_ready

from app.services.dispatch import RUN_BATCH_TASK
from app.services.runs import watcher
from app.services.runs.items import shutdown_requested

_in_pool_child = False
_previous_handler: Any = None


@worker_process_init.connect
def remember_pool_child(**_: object) -> None:
    global _in_pool_child
    _in_pool_child = True
    # A run whose processor ignores its time limit may end its own process only
    # in a prefork child, which the pool replaces. The solo pool sends this
    # signal too, in the worker's own (main) process, which must live on.
    watcher.may_end_own_process = current_process().name != "MainProcess"


def _installable(sender: Task | None) -> bool:
    # Only a prefork child's main thread may (and should) take over SIGTERM: in
    # the solo pool it belongs to the worker itself, in the threads pool to nobody.
    return (
        _in_pool_child
        and getattr(sender, "name", None) == RUN_BATCH_TASK
        and threading.current_thread() is threading.main_thread()
    )


def _request_hand_back(_signum: int, _frame: FrameType | None) -> None:
    shutdown_requested.set()


@task_prerun.connect
def take_over_sigterm(sender: Task | None = None, **_: Any) -> None:
    global _previous_handler
    if _installable(sender):
        shutdown_requested.clear()
        _previous_handler = signal.signal(signal.SIGTERM, _request_hand_back)


@task_postrun.connect
def give_back_sigterm(sender: Task | None = None, **_: Any) -> None:
    if _installable(sender) and _previous_handler is not None:
        signal.signal(signal.SIGTERM, _previous_handler)


# The signals that begin a worker's shutdown in its main process.
_SHUTDOWN_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)


@worker_ready.connect
def pass_shutdown_on_to_pool_processes(**_: Any) -> None:
    """Wrap Celery's shutdown handlers (installed by now) so that they first signal the pool.

    Celery's own `worker_shutting_down` comes only after the soft-shutdown wait,
    too late for a run to hand back in time.
    """
    if threading.current_thread() is not threading.main_thread():  # an embedded worker (tests)
        return
    for sig in _SHUTDOWN_SIGNALS:
        signal.signal(sig, partial(_signal_pool_then, signal.getsignal(sig)))


def _signal_pool_then(celery_handler: Any, signum: int, frame: FrameType | None) -> None:
    for child in active_children():
        with suppress(ProcessLookupError, TypeError):  # gone already, or never started
            os.kill(child.pid, signal.SIGTERM)
    if callable(celery_handler):
        celery_handler(signum, frame)
    elif celery_handler == signal.SIG_DFL:
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
