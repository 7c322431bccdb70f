"""Profiles: the things a batch processes, one item per profile.

Tags are a text[] column with a GIN index rather than a table of their own:
they are read and written whole with their profile (every profile's JSON
carries them; PATCH and import replace them), so a write stays one row and an
import's upsert stays one statement, while `tags @> ARRAY[...]` (a tag filter,
choosing by tag) is an index lookup.

A profile that a batch's items refer to is never removed, only marked deleted
(`deleted_at`): the items, the batch pages and a stopped batch's resume keep
reading it. Names are unique among live profiles only, so a deleted profile's
name can be taken again.
"""

from datetime import datetime
from typing import Any

from sqlalchemy import DateTime, Index, String, text
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Mapped, mapped_column

from app.extensions import Model
from app.models._types import utcnow

TAG_MAX = 64


class Profile(Model):
    __tablename__ = "profiles"
    __table_args__ = (
        Index("profile_name_live", "name", unique=True, postgresql_where=text("deleted_at IS NULL")),
        Index("profile_tags", "tags", postgresql_using="gin"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    attributes: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    tags: Mapped[list[str]] = mapped_column(ARRAY(String(TAG_MAX)), default=list, server_default=text("'{}'"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
