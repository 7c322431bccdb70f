"""Batches: creation (validated, then handed to the queue manager) and reads."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from flask import current_app
from sqlalchemy import case, select
from sqlalchemy.orm import defer
from sqlalchemy.orm.attributes import set_committed_value

from app import processors
from app.errors import InvalidInput, NotFound
from app.extensions import db
from app.models import RUNNING_STATUSES, Batch, BatchItem
from app.models.batches import queued_ahead
from app.services import storable_id
from app.services.pages import Page, paginate
from app.services.profiles import missing_profile_ids
from app.services.queue_manager import NewBatch, queue_manager
from app.services.waiting import judge_queued


def request_digest(body: dict[str, Any]) -> str:
    """A stable digest of a creation body, to tell a retry from a different request."""
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def create_batch(
    data: dict[str, Any], actor: str, idempotency_key: str | None = None, raw_body: dict[str, Any] | None = None
) -> tuple[Batch, bool]:
    """Queue a validated batch; return it and whether it is new (False for an idempotent repeat)."""
    missing = missing_profile_ids(data["profile_ids"])
    if missing:
        shown = ", ".join(str(pid) for pid in missing[:20])
        raise InvalidInput("unknown profiles", {"profile_ids": [f"unknown profile ids: {shown}"]})
    new = NewBatch(
        name=data["name"],
        processor=data["processor"],
        parameters=data["parameters"],
        profile_ids=data["profile_ids"],
        item_timeout=effective_item_timeout(data.get("item_timeout"), data["processor"]),
        created_by=actor,
        idempotency_key=idempotency_key,
        request_digest=request_digest(raw_body if raw_body is not None else data) if idempotency_key else None,
    )
    return queue_manager.enqueue(new)


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


def table_order() -> tuple[Any, ...]:
    """The running batch first, then the queue in order, then the rest newest first."""
    return (
        case((Batch.status.in_(RUNNING_STATUSES), 0), (Batch.queue_rank.is_not(None), 1), else_=2),
        Batch.queue_rank,
        Batch.created_at.desc(),
        Batch.id.desc(),
    )


def list_batches(page: int, per_page: int, status: str | None = None) -> Page[Batch]:
    """List batches in table order, optionally of one status."""
    query = select(Batch).options(defer(Batch.queue_position)).order_by(*table_order())
    if status:
        query = query.where(Batch.status == status)
    listing = paginate(query, page, per_page)
    _number_positions(listing.items)
    judge_queued(listing.items)
    return listing


def _number_positions(page: list[Batch]) -> None:
    """Set the queue positions of a page in table order with one count, not one per row.

    The queued batches of a page are consecutive in queue order, so only the
    first one's position is counted; the rest follow it.
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


def list_items(batch_id: int, page: int, per_page: int) -> Page[BatchItem]:
    """List a batch's items in processing order."""
    get_batch(batch_id)
    query = select(BatchItem).where(BatchItem.batch_id == batch_id).order_by(BatchItem.position)
    return paginate(query, page, per_page)
