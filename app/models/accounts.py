"""Who may use the service: API tokens for services, users for the pages, and the role each one has."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import CheckConstraint, DateTime, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from app.extensions import Model
from app.models._types import utcnow


class Role(StrEnum):
    """What a token or a user may do; each role may do everything the ones before it may."""

    VIEWER = "viewer"
    OPERATOR = "operator"
    ADMIN = "admin"

    def allows(self, needed: Role) -> bool:
        """Whether this role may do what `needed` may."""
        order = list(Role)
        return order.index(self) >= order.index(needed)


ROLE_CHECK = f"role IN ({', '.join(repr(role.value) for role in Role)})"


class ApiToken(Model):
    __tablename__ = "api_tokens"
    __table_args__ = (CheckConstraint(ROLE_CHECK, name="api_token_role_known"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    # Only a SHA-256 of the token is kept; the token itself is shown once.
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(20), default=Role.OPERATOR.value)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # A revoked token keeps its row, so that `token list` can still say what it was and when it was last used.
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The key of the HMAC that signs this token's completion webhooks. Kept as it is, not hashed:
    # the server must sign with it. Shown once (at create and at rotate-secret), never listed.
    # NULL for tokens made before webhooks until `token rotate-secret` gives them one.
    webhook_secret: Mapped[str | None] = mapped_column(String(100))


class User(Model):
    __tablename__ = "users"
    __table_args__ = (CheckConstraint(ROLE_CHECK, name="user_role_known"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(200), unique=True)
    password_hash: Mapped[str] = mapped_column(String(300))
    role: Mapped[str] = mapped_column(String(20), default=Role.VIEWER.value)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    disabled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Part of every session's user id: bumping it (disable, new password) ends every session the user has.
    session_version: Mapped[int] = mapped_column(Integer, default=1)
