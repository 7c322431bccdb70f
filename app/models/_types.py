"""Column helpers shared by the models."""

from datetime import UTC, datetime


def utcnow() -> datetime:
    """Timestamps are always timezone-aware UTC."""
    return datetime.now(UTC)
