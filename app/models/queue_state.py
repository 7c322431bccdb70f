"""The queue's own state: one row, locked by every queue change to serialize them."""

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, CheckConstraint, DateTime, String
from sqlalchemy.orm import Mapped, mapped_column

from app.extensions import db

QUEUE_STATE_ID = 1


class QueueState(db.Model):
    __tablename__ = "queue_state"
    __table_args__ = (CheckConstraint("id = 1", name="queue_state_single_row"),)

    id: Mapped[int] = mapped_column(primary_key=True, default=QUEUE_STATE_ID)
    paused: Mapped[bool] = mapped_column(Boolean, default=False)
    paused_by: Mapped[str | None] = mapped_column(String(200))
    paused_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # A counter bumped by every queue change: the statement that takes the queue lock
    # increments it (app/services/queue_manager.py). Nothing reads it.
    version: Mapped[int] = mapped_column(BigInteger, default=0)
    # When a repair round (the reconciler) last ran, whichever process ran it.
    repaired_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
