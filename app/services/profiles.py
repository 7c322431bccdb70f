"""Profiles: create, read, list."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from app.errors import Conflict, NotFound
from app.extensions import db
from app.models import Profile
from app.services import storable_id
from app.services.pages import Page, paginate


def create_profile(name: str, attributes: dict[str, Any]) -> Profile:
    """Create a profile; its name must be unique."""
    profile = Profile(name=name, attributes=attributes)
    db.session.add(profile)
    try:
        db.session.commit()
    except IntegrityError as exc:
        db.session.rollback()
        raise Conflict(f"a profile named {name!r} already exists", {"name": ["already taken"]}) from exc
    return profile


def get_profile(profile_id: int) -> Profile:
    """Return a profile or raise NotFound."""
    profile = db.session.get(Profile, profile_id) if storable_id(profile_id) else None
    if profile is None:
        raise NotFound(f"profile {profile_id} does not exist")
    return profile


def list_profiles(page: int, per_page: int, name_filter: str | None = None) -> Page[Profile]:
    """List profiles by name."""
    query = select(Profile).order_by(Profile.name, Profile.id)
    if name_filter:
        query = query.where(Profile.name.ilike(f"%{name_filter}%"))
    return paginate(query, page, per_page)


def missing_profile_ids(profile_ids: list[int]) -> list[int]:
    """Return the ids in the list that name no profile."""
    storable = [pid for pid in profile_ids if storable_id(pid)]
    found = set(db.session.scalars(select(Profile.id).where(Profile.id.in_(storable))))
    return [pid for pid in profile_ids if pid not in found]
