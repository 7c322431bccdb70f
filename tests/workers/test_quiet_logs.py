"""The worker's log filter keeps routine reconciler lines out and everything else in."""

from __future__ import annotations

import logging

import pytest

from workers.quiet_logs import SkipRoutineReconcile


def _record(level: int, message: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord("celery.app.trace", level, __file__, 1, message, args, None)


@pytest.mark.parametrize(
    ("level", "message", "args", "kept"),
    [
        (logging.INFO, "Task %s[%s] received", ("queue.reconcile", "abc"), False),
        (logging.INFO, "Task %s[%s] succeeded in %ss: %r", ("queue.reconcile", "abc", 0.01, None), False),
        (logging.ERROR, "Task %s[%s] raised unexpected: %r", ("queue.reconcile", "abc", "boom"), True),
        (logging.INFO, "Task %s[%s] received", ("batches.run", "abc"), True),
        (logging.INFO, "Task %s[%s] succeeded in %ss: %r", ("queue.promote_next", "abc", 0.01, 7), True),
    ],
)
def test_only_routine_reconciler_lines_are_dropped(level: int, message: str, args: tuple, kept: bool) -> None:
    assert SkipRoutineReconcile().filter(_record(level, message, *args)) is kept
