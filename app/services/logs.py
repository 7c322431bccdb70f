"""A batch's log: pages by line id in either direction, a level floor, and the whole log streamed.

Paging by id never skips a line because a batch's lines take their ids in
commit order (a trigger, migration 0005): a reader that saw id n will never
later find a committed line of that batch below n.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, Select, bindparam, func, select, union_all
from sqlalchemy.orm import aliased

from app.extensions import db
from app.models import BatchLog
from app.models.batches import LOG_LEVELS
from app.services.batches import get_batch
from app.services.pages import Page

LEVELS = LOG_LEVELS

# The first key of the advisory lock the ordering trigger takes (migration 0005).
LOG_ORDER_CLASS = 0x626C  # "bl"

# A bound past every line id (ids are bigints): ?before= this reads the newest lines.
PAST_THE_END = 2**63 - 1

# Lines read per query while streaming a download: memory stays flat whatever the log's length.
EXPORT_CHUNK = 5000

FORMATS = {"txt": "text/plain; charset=utf-8", "jsonl": "application/x-ndjson"}


@dataclass(frozen=True)
class Window:
    """Which lines of a log: a level floor and an exclusive id bound on one side."""

    level: str | None = None
    after: int | None = None
    before: int | None = None

    def levels(self) -> list[str] | None:
        """The levels shown, or None for every line (no floor, or the lowest)."""
        if self.level is None or self.level == LEVELS[0]:
            return None
        return list(LEVELS[LEVELS.index(self.level) :])


def _lines(batch_id: int, window: Window, level: str | None) -> Select[Any]:
    query = select(BatchLog).where(BatchLog.batch_id == batch_id)
    if level is not None:
        query = query.where(BatchLog.level == level)
    if window.after is not None:
        query = query.where(BatchLog.id > window.after)
    if window.before is not None:
        query = query.where(BatchLog.id < window.before)
    return query


def read_page(batch_id: int, window: Window, offset: int, limit: int) -> list[BatchLog]:
    """Lines of the window, oldest first: the first `limit` after `offset`, counted away from the bound.

    With `before` the lines nearest it are the first, so a page is the newest
    lines before the bound. With a level floor, each level is read on its own
    from the (batch_id, level, id) index and the few rows merged: the cost stays
    that of a page, however rare the level among 100,000 lines.
    """
    newest_first = window.before is not None
    levels = window.levels()
    if levels is None:
        query = _lines(batch_id, window, None)
        order = BatchLog.id.desc() if newest_first else BatchLog.id
        rows = list(db.session.scalars(query.order_by(order).offset(offset).limit(limit)))
    else:
        parts = [
            _lines(batch_id, window, level)
            .order_by(BatchLog.id.desc() if newest_first else BatchLog.id)
            .limit(offset + limit)
            for level in levels
        ]
        merged = aliased(BatchLog, union_all(*parts).subquery())
        order = merged.id.desc() if newest_first else merged.id
        rows = list(db.session.scalars(select(merged).order_by(order).offset(offset).limit(limit)))
    return rows[::-1] if newest_first else rows


def count(batch_id: int, window: Window) -> int:
    """How many lines the window holds."""
    query = select(func.count()).select_from(BatchLog).where(BatchLog.batch_id == batch_id)
    levels = window.levels()
    if levels is not None:
        query = query.where(BatchLog.level.in_(levels))
    if window.after is not None:
        query = query.where(BatchLog.id > window.after)
    if window.before is not None:
        query = query.where(BatchLog.id < window.before)
    return db.session.scalar(query) or 0


def list_logs(batch_id: int, window: Window, page: int, per_page: int) -> Page[BatchLog]:
    """One page of a batch's log for the API, oldest first (see read_page), and the window's size."""
    get_batch(batch_id)
    items = read_page(batch_id, window, (page - 1) * per_page, per_page)
    return Page(items=items, total=count(batch_id, window), page=page, per_page=per_page)


def text_line(line: Any) -> str:
    """A line of the .txt download: `at level message`."""
    return f"{line.at.isoformat()} {line.level} {line.message}\n"


def json_line(line: Any) -> str:
    """A line of the .jsonl download: the API's object."""
    body = {"id": line.id, "at": line.at.isoformat(), "level": line.level, "message": line.message}
    return json.dumps(body, ensure_ascii=False) + "\n"


@dataclass(frozen=True)
class Export:
    """A download of a whole log: its chunks (read lazily), media type and file name."""

    chunks: Iterator[str]
    mimetype: str
    filename: str


def export(batch_id: int, fmt: str) -> Export:
    """The whole log as text or JSON Lines, read in keyset pages as the response is sent.

    The batch is looked up now, so an unknown id is a 404 before anything streams.
    """
    get_batch(batch_id)
    render = text_line if fmt == "txt" else json_line
    return Export(_chunks(db.engine, batch_id, render), FORMATS[fmt], f"batch-{batch_id}-log.{fmt}")


# The columns a download writes, read as plain rows: no ORM objects for 100,000 lines.
_EXPORT_PAGE = (
    select(BatchLog.id, BatchLog.at, BatchLog.level, BatchLog.message)
    .where(BatchLog.batch_id == bindparam("batch_id"), BatchLog.id > bindparam("after"))
    .order_by(BatchLog.id)
    .limit(EXPORT_CHUNK)
)


def _chunks(engine: Engine, batch_id: int, render: Callable[[Any], str]) -> Iterator[str]:
    # A connection of its own, not the request's session: the server iterates
    # this after the request's context is gone.
    with engine.connect() as connection:
        after = 0
        while True:
            rows = connection.execute(_EXPORT_PAGE, {"batch_id": batch_id, "after": after}).all()
            # Each page in a transaction of its own, so a slow client holds no snapshot open.
            connection.rollback()
            if not rows:
                return
            yield "".join(render(row) for row in rows)
            after = rows[-1].id
