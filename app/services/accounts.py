"""API tokens and users."""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import select, update
from werkzeug.security import check_password_hash, generate_password_hash

from app.errors import Conflict
from app.extensions import db
from app.models import ApiToken, User
from app.models._types import utcnow


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(name: str) -> str:
    """Create a token and return it; only its hash is stored, so this is the one time it is seen."""
    token = "bq_" + secrets.token_urlsafe(32)
    db.session.add(ApiToken(name=name, token_hash=_digest(token)))
    db.session.commit()
    return token


def authenticate_token(token: str) -> ApiToken | None:
    """Return the token's record if the token is valid."""
    record = db.session.scalar(select(ApiToken).where(ApiToken.token_hash == _digest(token)))
    if record is not None:
        db.session.execute(update(ApiToken).where(ApiToken.id == record.id).values(last_used_at=utcnow()))
        db.session.commit()
    return record


def create_user(username: str, password: str) -> User:
    """Create a user who can sign in to the pages."""
    if db.session.scalar(select(User).where(User.username == username)) is not None:
        raise Conflict(f"user {username!r} already exists")
    user = User(username=username, password_hash=generate_password_hash(password))
    db.session.add(user)
    db.session.commit()
    return user


def authenticate_user(username: str, password: str) -> User | None:
    """Return the user if the password matches."""
    user = db.session.scalar(select(User).where(User.username == username))
    if user is None or not check_password_hash(user.password_hash, password):
        return None
    return user
