"""Profiles: create, read, list, edit, delete, and the tags a batch can be chosen by.

Deleting is race-free against a batch created at the same moment: the delete
locks the profile row FOR UPDATE before it looks for queued or running
batches, and batch creation locks the profiles it picks FOR KEY SHARE
(`lock_live_profiles`) in the transaction that inserts the items. Whichever
comes second waits for the first to commit, then sees its result: the delete
finds the new batch (409), or the creation finds the profile gone (422).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, delete, exists, func, select
from sqlalchemy.exc import IntegrityError

from app.errors import Conflict, NotFound
from app.extensions import db
from app.models import Batch, BatchItem, BatchStatus, Profile
from app.models._types import utcnow
from app.services import storable_id
from app.services.pages import Page, paginate

# The statuses in which a batch still needs its profiles.
ACTIVE_STATUSES = (BatchStatus.QUEUED.value, BatchStatus.IN_PROGRESS.value, BatchStatus.STOPPING.value)


def live() -> ColumnElement[bool]:
    """The profiles that are not deleted."""
    return Profile.deleted_at.is_(None)


def _name_taken(name: str) -> Conflict:
    return Conflict(f"a profile named {name!r} already exists", {"name": ["already taken"]})


def create_profile(name: str, attributes: dict[str, Any], tags: list[str] | None = None) -> Profile:
    """Create a profile; its name must be unique."""
    profile = Profile(name=name, attributes=attributes, tags=tags or [])
    db.session.add(profile)
    try:
        db.session.commit()
    except IntegrityError as exc:
        db.session.rollback()
        raise _name_taken(name) from exc
    return profile


def get_profile(profile_id: int) -> Profile:
    """Return a live profile or raise NotFound."""
    profile = db.session.get(Profile, profile_id) if storable_id(profile_id) else None
    if profile is None or profile.deleted_at is not None:
        raise NotFound(f"profile {profile_id} does not exist")
    return profile


def update_profile(profile_id: int, changes: dict[str, Any]) -> Profile:
    """Change any of name, attributes and tags; each given one replaces the old value whole."""
    profile = get_profile(profile_id)
    for key in ("name", "attributes", "tags"):
        if key in changes:
            setattr(profile, key, changes[key])
    try:
        db.session.commit()
    except IntegrityError as exc:
        db.session.rollback()
        raise _name_taken(changes["name"]) from exc
    return profile


def delete_profile(profile_id: int) -> None:
    """Delete a profile no queued or running batch uses.

    A profile that only finished batches refer to is marked deleted instead of
    removed, so their items and pages keep their names.
    """
    locked = select(Profile).where(Profile.id == profile_id, live()).with_for_update()
    profile = db.session.scalar(locked) if storable_id(profile_id) else None
    if profile is None:
        raise NotFound(f"profile {profile_id} does not exist")
    users = active_batches_using(profile_id)
    if users:
        shown = ", ".join(str(batch_id) for batch_id in users)
        raise Conflict(
            f"profile {profile.name!r} is used by queued or running batch {shown}; "
            "delete it once that has finished or been cancelled",
            {"batches": users},
        )
    referenced = exists().where(BatchItem.profile_id == profile_id)
    removed = db.session.execute(delete(Profile).where(Profile.id == profile_id, ~referenced))
    if not removed.rowcount:  # type: ignore[attr-defined]
        profile.deleted_at = utcnow()
    db.session.commit()


def active_batches_using(profile_id: int, limit: int = 5) -> list[int]:
    """Ids of (up to `limit`) queued or running batches with an item for the profile."""
    query = (
        select(BatchItem.batch_id)
        .join(Batch, Batch.id == BatchItem.batch_id)
        .where(BatchItem.profile_id == profile_id, Batch.status.in_(ACTIVE_STATUSES))
        .distinct()
        .order_by(BatchItem.batch_id)
        .limit(limit)
    )
    return list(db.session.scalars(query))


def list_profiles(page: int, per_page: int, name_filter: str | None = None, tag: str | None = None) -> Page[Profile]:
    """List live profiles by name, optionally those whose name contains a text or that carry a tag."""
    query = select(Profile).where(live()).order_by(Profile.name, Profile.id)
    if name_filter:
        escaped = name_filter.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        query = query.where(Profile.name.ilike(f"%{escaped}%", escape="\\"))
    if tag:
        query = query.where(Profile.tags.contains([tag]))
    return paginate(query, page, per_page)


def tag_counts() -> list[tuple[str, int]]:
    """Every tag of a live profile with how many carry it, by tag."""
    tags = select(func.unnest(Profile.tags).label("tag")).where(live()).subquery()
    rows = db.session.execute(select(tags.c.tag, func.count()).group_by(tags.c.tag).order_by(tags.c.tag))
    return [(row[0], row[1]) for row in rows]


def lock_live_profiles(profile_ids: list[int]) -> list[int]:
    """Lock the live profiles among the ids until the transaction ends (FOR KEY SHARE); return the missing ids.

    The lock keeps a concurrent delete from passing its check before this
    transaction's batch items exist (see the module docstring).
    """
    storable = [pid for pid in profile_ids if storable_id(pid)]
    query = select(Profile.id).where(Profile.id.in_(storable), live()).with_for_update(read=True, key_share=True)
    found = set(db.session.scalars(query))
    return [pid for pid in profile_ids if pid not in found]


def ids_by_tags(tags: list[str]) -> tuple[list[int], list[str]]:
    """The ids of live profiles carrying any of the tags, by name, and the tags no live profile carries."""
    if not tags:
        return [], []
    carrying = select(Profile.id).where(live(), Profile.tags.overlap(tags)).order_by(Profile.name, Profile.id)
    ids = list(db.session.scalars(carrying))
    carried = select(func.unnest(Profile.tags)).where(live(), Profile.tags.overlap(tags)).distinct()
    present = set(db.session.scalars(carried))
    return ids, [name for name in tags if name not in present]
