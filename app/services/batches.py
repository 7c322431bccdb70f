"""Batches: creation (validated, then handed to the queue manager) and reads."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flask import current_app
from sqlalchemy import Select, func, literal, select, text, union_all
from sqlalchemy.orm import defer
from sqlalchemy.orm.attributes import set_committed_value

from app import processors
from app.errors import InvalidInput, NotFound
from app.extensions import db
from app.models import RUNNING_STATUSES, ApiToken, Batch, BatchItem
from app.models.batches import RUNNING_SLOT, queued_ahead
from app.schemas.batches import MAX_PROFILES
from app.services import queue_manager, status_counts, storable_id
from app.services.pages import Page, paginate
from app.services.profiles import ids_by_tags, lock_live_profiles
from app.services.queue_manager import NewBatch
from app.services.waiting import judge_queued


def request_digest(body: dict[str, Any]) -> str:
    """A stable digest of a creation body, to tell a retry from a different request."""
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def create_batch(
    data: dict[str, Any],
    actor: str,
    idempotency_key: str | None = None,
    raw_body: dict[str, Any] | None = None,
    token_id: int | None = None,
) -> tuple[Batch, bool]:
    """Queue a validated batch; return it and whether it is new (False for an idempotent repeat).

    `token_id` is the submitting token, whose webhook secret signs the batch's callback.
    """
    callback_url = data.get("callback_url")
    if callback_url is not None:
        require_signing_secret(token_id)
    profile_ids = chosen_profiles(data["profile_ids"], data.get("profile_tags") or [])
    new = NewBatch(
        name=data["name"],
        processor=data["processor"],
        parameters=data["parameters"],
        profile_ids=profile_ids,
        item_timeout=effective_item_timeout(data.get("item_timeout"), data["processor"]),
        created_by=actor,
        idempotency_key=idempotency_key,
        request_digest=request_digest(raw_body if raw_body is not None else data) if idempotency_key else None,
        callback_url=callback_url,
        callback_token_id=token_id if callback_url is not None else None,
    )
    return queue_manager.enqueue(new)


def require_signing_secret(token_id: int | None) -> None:
    """Refuse a callback that nothing could sign: no token (a page's form), or one made before webhooks."""
    secret = db.session.scalar(select(ApiToken.webhook_secret).where(ApiToken.id == token_id)) if token_id else None
    if secret is None:
        raise InvalidInput(
            "a callback needs a token with a webhook secret",
            {"callback_url": ["this token has no webhook secret yet: give it one with `flask token rotate-secret`"]},
        )


def chosen_profiles(profile_ids: list[int], tags: list[str]) -> list[int]:
    """The batch's profiles: the ids given, then those of the tags not among them, each existing and locked.

    Tags are resolved here, once, so the batch keeps the profiles its tags
    named at creation. The lock (held until the batch is committed) keeps a
    concurrent delete from taking one of them away meanwhile.
    """
    tagged, unknown_tags = ids_by_tags(tags)
    if unknown_tags:
        raise InvalidInput("unknown tags", {"profile_tags": [f"no profile is tagged {', '.join(unknown_tags)}"]})
    given = set(profile_ids)
    union = profile_ids + [pid for pid in tagged if pid not in given]
    if len(union) > MAX_PROFILES:
        field = "profile_tags" if tags else "profile_ids"
        raise InvalidInput("too many profiles", {field: [f"{len(union)} profiles chosen; at most {MAX_PROFILES}"]})
    missing = lock_live_profiles(union)
    if missing:
        shown = ", ".join(str(pid) for pid in missing[:20])
        raise InvalidInput("unknown profiles", {"profile_ids": [f"unknown profile ids: {shown}"]})
    return union


def effective_item_timeout(requested: float | None, processor_name: str) -> float:
    """The batch's item time limit, fixed at creation: the request's, else its processor's own, else the default.

    Fixed rather than looked up at run time, so a batch keeps the limit it was
    created with whatever its worker's settings or processor version say.
    """
    if requested is not None:
        return float(requested)
    declared = getattr(processors.get(processor_name), "item_timeout", None)
    if declared is not None:
        return float(declared)
    return float(current_app.config["ITEM_TIMEOUT_DEFAULT"])


def get_batch(batch_id: int) -> Batch:
    """Return a batch or raise NotFound."""
    batch = db.session.get(Batch, batch_id) if storable_id(batch_id) else None
    if batch is None:
        raise NotFound(f"batch {batch_id} does not exist")
    return batch


@dataclass(frozen=True)
class BatchFilter:
    """What the table and `GET /batches` narrow the list to; an empty filter lists everything."""

    q: str | None = None
    statuses: tuple[str, ...] = ()
    processor: str | None = None
    created_by: str | None = None
    created_after: datetime | None = None  # inclusive
    created_before: datetime | None = None  # exclusive

    @property
    def by_status_only(self) -> bool:
        """Narrowed by status at most: its total is the database's kept counts (app/services/status_counts.py)."""
        return not (self.q or self.processor or self.created_by or self.created_after or self.created_before)

    def conditions(self) -> list[Any]:
        found: list[Any] = []
        if self.q:
            found.append(Batch.name.ilike(f"%{_escape_like(self.q)}%", escape="\\"))
        if self.statuses:
            found.append(Batch.status.in_(self.statuses))
        if self.processor:
            found.append(Batch.processor == self.processor)
        if self.created_by:
            found.append(Batch.created_by == self.created_by)
        if self.created_after is not None:
            found.append(Batch.created_at >= self.created_after)
        if self.created_before is not None:
            found.append(Batch.created_at < self.created_before)
        return found


def _escape_like(text: str) -> str:
    """Search for `%` and `_` as themselves."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _total(filters: BatchFilter, conditions: list[Any]) -> int:
    """How many batches the listing holds. Counting them read one index entry per batch (45 ms of the
    table's first page at a million); by status alone, the counts the database keeps say it at once."""
    if filters.by_status_only:
        kept = status_counts.counts()
        return sum(kept.get(status, 0) for status in (filters.statuses or kept))
    return db.session.scalar(select(func.count()).select_from(Batch).where(*conditions)) or 0


def list_batches(page: int, per_page: int, filters: BatchFilter | None = None) -> Page[Batch]:
    """List batches in table order (the running batch, the queue in order, the rest newest first), filtered."""
    conditions = filters.conditions() if filters is not None else []
    offset = (page - 1) * per_page
    total = _total(filters or BatchFilter(), conditions)
    items = list(db.session.scalars(_table_page(conditions, offset, per_page)))
    listing = Page(items=items, total=total, page=page, per_page=per_page)
    if conditions:
        _look_up_positions(listing.items)
    else:
        _number_positions(listing.items)
    judge_queued(listing.items)
    return listing


def _table_page(conditions: list[Any], offset: int, limit: int) -> Select[Batch]:
    """One page of the table, read as its three parts, each in the order of an index of its own.

    Sorted as one list, the table's order (running, queued by rank, the rest newest first) is an
    expression no index has: page 1 sorted every batch (900 ms at a million, bench.size). Each part
    needs at most `offset + limit` rows, read in order from batch_one_running, batch_rank_unique and
    batch_finished_order, and only those few are put in order; one statement, so one snapshot.
    """
    enough = offset + limit
    running = select(Batch.id, literal(0).label("part")).where(text(RUNNING_SLOT), *conditions)
    queued = (
        select(Batch.id, literal(1).label("part"))
        .where(Batch.queue_rank.is_not(None), *conditions)
        .order_by(Batch.queue_rank)
        .limit(enough)
    )
    ended = (
        select(Batch.id, literal(2).label("part"))
        .where(Batch.queue_rank.is_(None), text(f"NOT ({RUNNING_SLOT})"), *conditions)
        .order_by(Batch.created_at.desc(), Batch.id.desc())
        .limit(enough)
    )
    parts = union_all(running, queued.subquery().select(), ended.subquery().select()).subquery()
    return (
        select(Batch)
        .options(defer(Batch.queue_position))
        .join(parts, parts.c.id == Batch.id)
        .order_by(parts.c.part, Batch.queue_rank, Batch.created_at.desc(), Batch.id.desc())
        .limit(limit)
        .offset(offset)
    )


def _number_positions(page: list[Batch]) -> None:
    """Set the queue positions of a page in table order with one count, not one per row.

    Unfiltered, the queued batches of a page are consecutive in queue order, so
    only the first one's position is counted; the rest follow it.
    """
    queued = [batch for batch in page if batch.queue_rank is not None]
    first = 0
    if queued:
        first = db.session.scalar(queued_ahead(queued[0].queue_rank)) or 0
    for batch in page:
        position = None
        if batch.status in RUNNING_STATUSES:
            position = 0
        elif batch.queue_rank is not None:
            first += 1
            position = first
        set_committed_value(batch, "queue_position", position)


def _look_up_positions(page: list[Batch]) -> None:
    """Set the true queue positions of a filtered page, whose queued rows may skip places.

    One numbering of the whole queue rather than a count per row: a page of 50
    queued rows in a queue of 10,000 would otherwise count half a million ranks.
    """
    ids = [batch.id for batch in page if batch.queue_rank is not None]
    positions: dict[int, int] = {}
    if ids:
        numbered = (
            select(Batch.id, func.row_number().over(order_by=Batch.queue_rank).label("position"))
            .where(Batch.queue_rank.is_not(None))
            .subquery()
        )
        rows = db.session.execute(select(numbered.c.id, numbered.c.position).where(numbered.c.id.in_(ids)))
        positions = {row.id: row.position for row in rows}
    for batch in page:
        position = 0 if batch.status in RUNNING_STATUSES else positions.get(batch.id)
        set_committed_value(batch, "queue_position", position)


# From one name to the next in batch_created_by (a "loose index scan"): one probe per creator, where
# DISTINCT would read every batch (226 ms at a million, bench.size).
_CREATORS = text(
    """
    WITH RECURSIVE names AS (
        (SELECT created_by AS name FROM batches WHERE created_by IS NOT NULL ORDER BY created_by LIMIT 1)
        UNION ALL
        SELECT (SELECT created_by FROM batches WHERE created_by > names.name ORDER BY created_by LIMIT 1)
        FROM names WHERE names.name IS NOT NULL
    )
    SELECT name FROM names WHERE name IS NOT NULL
    """
)


def creators() -> list[str]:
    """Everyone who has created a batch, by name: the table's "created by" suggestions."""
    return [name for name in db.session.scalars(_CREATORS) if name]


def list_items(batch_id: int, page: int, per_page: int) -> Page[BatchItem]:
    """List a batch's items in processing order."""
    get_batch(batch_id)
    query = select(BatchItem).where(BatchItem.batch_id == batch_id).order_by(BatchItem.position)
    return paginate(query, page, per_page)
