"""API tokens and users: who they are, what role they have, and whether they may still get in.

Every request reads its token or user from the database (no per-process cache), so a
revoke, an expiry, a disable or a new password takes effect at once on every web process.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, or_, select, update
from werkzeug.security import check_password_hash, generate_password_hash

from app.errors import Conflict, InvalidInput, NotFound
from app.extensions import db
from app.models import ApiToken, Role, User
from app.models._types import utcnow

# werkzeug's scrypt, named rather than left to werkzeug's default, so that a library upgrade can't weaken it.
PASSWORD_METHOD = "scrypt"
# Checked against when the username is unknown, so that an unknown user costs as much time as a wrong password.
_UNKNOWN_USER_HASH = generate_password_hash(secrets.token_hex(16), method=PASSWORD_METHOD)
DURATION = re.compile(r"^\s*(\d+)\s*([smhd])\s*$")
UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def parse_duration(text: str) -> timedelta:
    """Read `90d`, `12h`, `30m` or `45s`."""
    match = DURATION.match(text)
    if match is None or int(match.group(1)) == 0:
        raise InvalidInput("a duration is a positive number and s, m, h or d, like 90d", {"expires_in": [text]})
    return timedelta(**{UNITS[match.group(2)]: int(match.group(1))})


def parse_role(text: str) -> Role:
    try:
        return Role(text)
    except ValueError:
        choices = ", ".join(role.value for role in Role)
        raise InvalidInput(f"a role is one of {choices}", {"role": [text]}) from None


# --- tokens ----------------------------------------------------------------------


def _usable_token() -> ColumnElement[bool]:
    """The SQL condition a token meets while it may be used: not revoked and not expired."""
    return and_(ApiToken.revoked_at.is_(None), or_(ApiToken.expires_at.is_(None), ApiToken.expires_at > utcnow()))


@dataclass(frozen=True)
class IssuedToken:
    """A new token and its webhook signing secret: the one time either is seen."""

    token: str
    webhook_secret: str


def new_webhook_secret() -> str:
    """A fresh key for signing a token's completion webhooks (HMAC-SHA256: 256 random bits)."""
    return "whsec_" + secrets.token_urlsafe(32)


def issue_token(name: str, role: Role = Role.OPERATOR, expires_in: timedelta | None = None) -> IssuedToken:
    """Create a token with its webhook secret and return both; only the token's hash is stored."""
    name = name.strip()
    if not name:
        raise InvalidInput("a token needs a name", {"name": ["is required"]})
    taken = db.session.scalar(select(ApiToken.id).where(ApiToken.name == name, _usable_token()))
    if taken is not None:
        raise Conflict(f"a token named {name!r} is already in use; revoke it first or choose another name")
    token = "bq_" + secrets.token_urlsafe(32)
    secret = new_webhook_secret()
    expires_at = utcnow() + expires_in if expires_in is not None else None
    record = ApiToken(name=name, token_hash=_digest(token), role=role.value, expires_at=expires_at)
    record.webhook_secret = secret
    db.session.add(record)
    db.session.commit()
    return IssuedToken(token, secret)


def create_token(name: str, role: Role = Role.OPERATOR, expires_in: timedelta | None = None) -> str:
    """Create a token and return it; only its hash is stored, so this is the one time it is seen."""
    return issue_token(name, role, expires_in).token


def rotate_webhook_secret(name: str) -> str:
    """Give the usable token of that name a new webhook secret and return it (the old one signs nothing more).

    Deliveries still pending are signed with the new secret from their next attempt on.
    """
    record = db.session.scalar(
        select(ApiToken).where(ApiToken.name == name, _usable_token()).order_by(ApiToken.id.desc()).limit(1)
    )
    if record is None:
        raise NotFound(f"no usable token named {name!r}")
    secret = new_webhook_secret()
    record.webhook_secret = secret
    db.session.commit()
    return secret


# How stale a token's last_used_at may get: written at most this often, not on every request.
LAST_USED_PRECISION = timedelta(minutes=1)


def authenticate_token(token: str) -> ApiToken | None:
    """Return the token's record if the token may be used now.

    Its last use is written only when the stored one is a minute old or more:
    a write and a commit on every request cost more than the rest of the check,
    and lists show the last use to the minute anyway. Without a write the
    request's transaction goes on, and the record stays loaded for the view.
    """
    query = select(ApiToken).where(ApiToken.token_hash == _digest(token), _usable_token())
    record = db.session.scalar(query)
    now = utcnow()
    if record is not None and (record.last_used_at is None or record.last_used_at <= now - LAST_USED_PRECISION):
        db.session.execute(
            update(ApiToken)
            .where(ApiToken.id == record.id, or_(ApiToken.last_used_at.is_(None), ApiToken.last_used_at < now))
            .values(last_used_at=now)
        )
        db.session.commit()
    return record


def list_tokens() -> Sequence[ApiToken]:
    """Every token, revoked and expired ones too, oldest first."""
    return db.session.scalars(select(ApiToken).order_by(ApiToken.created_at, ApiToken.id)).all()


def token_state(token: ApiToken, now: datetime | None = None) -> str:
    """`active`, `expired` or `revoked`, as lists show it."""
    now = now or utcnow()
    if token.revoked_at is not None:
        return "revoked"
    return "expired" if token.expires_at is not None and token.expires_at <= now else "active"


def revoke_token(name: str) -> int:
    """Revoke the usable tokens of that name (older installs may have several) and return how many."""
    result = db.session.execute(
        update(ApiToken).where(ApiToken.name == name, ApiToken.revoked_at.is_(None)).values(revoked_at=utcnow())
    )
    count = int(result.rowcount)  # type: ignore[attr-defined]
    if count == 0:
        db.session.rollback()
        raise NotFound(f"no token named {name!r} to revoke")
    db.session.commit()
    return count


# --- users -----------------------------------------------------------------------


@dataclass(frozen=True)
class SessionKey:
    """What a session cookie names: the user and the session version it was signed in with."""

    user_id: int
    version: int

    def __str__(self) -> str:
        return f"{self.user_id}:{self.version}"

    @classmethod
    def parse(cls, text: str) -> SessionKey | None:
        user_id, _, version = text.partition(":")
        return cls(int(user_id), int(version)) if user_id.isdigit() and version.isdigit() else None


def _find_user(username: str) -> User:
    user = db.session.scalar(select(User).where(User.username == username))
    if user is None:
        raise NotFound(f"no user named {username!r}")
    return user


def _check_password(password: str) -> None:
    if not password:
        raise InvalidInput("a password is required", {"password": ["is required"]})


def create_user(username: str, password: str, role: Role = Role.VIEWER) -> User:
    """Create a user who can sign in to the pages."""
    _check_password(password)
    if db.session.scalar(select(User).where(User.username == username)) is not None:
        raise Conflict(f"user {username!r} already exists")
    user = User(username=username, password_hash=generate_password_hash(password, method=PASSWORD_METHOD))
    user.role = role.value
    db.session.add(user)
    db.session.commit()
    return user


def authenticate_user(username: str, password: str) -> User | None:
    """Return the user if they may sign in with this password; the same None for every reason they may not."""
    user = db.session.scalar(select(User).where(User.username == username))
    matches = check_password_hash(user.password_hash if user is not None else _UNKNOWN_USER_HASH, password)
    if user is None or not matches or user.disabled_at is not None:
        return None
    return user


def session_user(key: SessionKey) -> User | None:
    """The user a session belongs to, unless they were disabled or their sessions were ended since."""
    user = db.session.get(User, key.user_id)
    if user is None or user.disabled_at is not None or user.session_version != key.version:
        return None
    return user


def list_users() -> Sequence[User]:
    return db.session.scalars(select(User).order_by(User.username)).all()


def _end_sessions(user: User) -> None:
    user.session_version += 1


def disable_user(username: str) -> User:
    """Disable a user: they can't sign in, and every session they have ends."""
    user = _find_user(username)
    if user.disabled_at is None:
        user.disabled_at = utcnow()
    _end_sessions(user)
    db.session.commit()
    return user


def enable_user(username: str) -> User:
    user = _find_user(username)
    user.disabled_at = None
    db.session.commit()
    return user


def set_password(username: str, password: str) -> User:
    """Give a user a new password and end the sessions signed in with the old one."""
    _check_password(password)
    user = _find_user(username)
    user.password_hash = generate_password_hash(password, method=PASSWORD_METHOD)
    _end_sessions(user)
    db.session.commit()
    return user


def set_role(username: str, role: Role) -> User:
    """Change a user's role; their sessions carry on with it from their next request."""
    user = _find_user(username)
    user.role = role.value
    db.session.commit()
    return user
