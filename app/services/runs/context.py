"""The item in hand: the RunContext its processor gets, its time limit, and the log lines of its end."""

from __future__ import annotations

import threading

from app.models import ItemStatus
from app.processors import ItemKey
from app.services.runs.claim import PendingItem


class ItemContext:
    """The RunContext a processor gets, and the item in hand with its time limit, which the watcher enforces."""

    def __init__(
        self, item: ItemKey, pending: PendingItem, total: int, limit: float, started: float, processor: str = ""
    ) -> None:
        self.batch_id = item.batch_id
        self.processor = processor  # its name: the metrics count a stalled item under it
        self.item = item
        self.pending = pending
        self.total = total
        self.limit = limit
        self.started = started
        self.deadline = started + limit  # on time.monotonic()'s clock, from the item's start
        # A stop or the deadline: the processor should let go of the item now.
        self.interrupted = threading.Event()
        self.timed_out = False
        self.lines: list[tuple[str, str]] = []

    def stop_requested(self) -> bool:
        return self.interrupted.is_set()

    def wait(self, seconds: float) -> bool:
        return self.interrupted.wait(seconds)

    def log(self, message: str, level: str = "info") -> None:
        self.lines.append((level, message))

    def time_out(self) -> None:
        """The deadline passed: the item fails, and its processor is asked to let go."""
        self.timed_out = True
        self.interrupted.set()


def timed_out_error(limit: float) -> str:
    """The error of an item that ran past its time limit."""
    return f"timed out after {limit:g} s"


def item_lines(ctx: ItemContext, status: ItemStatus, message: str) -> list[dict[str, str]]:
    """The log lines of an item's end: what its processor logged, then how it ended."""
    name = ctx.pending.profile.name
    lines = [{"level": level, "message": f"{name}: {line}"} for level, line in ctx.lines]
    lines.append(
        {
            "level": "error" if status is ItemStatus.FAILED else "info",
            "message": f"item {ctx.pending.position + 1}/{ctx.total} ({name}) {message}",
        }
    )
    return lines
