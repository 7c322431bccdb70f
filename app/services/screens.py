"""Reads the HTML pages need beyond the API's: profile choices, item rows with names."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select

from app.extensions import db
from app.models import BatchItem, Profile
from app.services.pages import Page


@dataclass(frozen=True)
class ItemRow:
    """One item of a batch as its page shows it."""

    item: BatchItem
    profile_name: str


def profile_choices() -> list[tuple[int, str]]:
    """Return every profile as (id, name), by name: the creation form's checkboxes."""
    query = select(Profile.id, Profile.name).where(Profile.deleted_at.is_(None)).order_by(Profile.name, Profile.id)
    rows = db.session.execute(query)
    return [(row.id, row.name) for row in rows]


def item_rows(batch_id: int, page: int, per_page: int) -> Page[ItemRow]:
    """One page of a batch's items in processing order, with their profiles' names."""
    total = db.session.scalar(select(func.count()).where(BatchItem.batch_id == batch_id)) or 0
    query = (
        select(BatchItem, Profile.name)
        .join(Profile, Profile.id == BatchItem.profile_id)
        .where(BatchItem.batch_id == batch_id)
        .order_by(BatchItem.position)
        .limit(per_page)
        .offset((page - 1) * per_page)
    )
    items = [ItemRow(item=item, profile_name=name) for item, name in db.session.execute(query)]
    return Page(items=items, total=total, page=page, per_page=per_page)
