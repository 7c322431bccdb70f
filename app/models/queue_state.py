"""The queue's own state: one row, locked by every queue change to serialize them."""

from datetime import datetime

from sqlalchemy import Boolean, CheckConstraint, DateTime, Integer, String, false
from sqlalchemy.orm import Mapped, mapped_column

from app.extensions import Model

QUEUE_STATE_ID = 1


class QueueState(Model):
    __tablename__ = "queue_state"
    __table_args__ = (CheckConstraint("id = 1", name="queue_state_single_row"),)

    id: Mapped[int] = mapped_column(primary_key=True, default=QUEUE_STATE_ID)
    paused: Mapped[bool] = mapped_column(Boolean, default=False)
    paused_by: Mapped[str | None] = mapped_column(String(200))
    paused_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Why the queue is paused: "stopped", "drained", or the failure policy's sentence.
    paused_reason: Mapped[str | None] = mapped_column(String(200))
    # "Pause after this batch": the queue pauses when the running batch ends.
    draining: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    drain_by: Mapped[str | None] = mapped_column(String(200))
    drain_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The failure policy as an operator last set it; NULL: the settings' (QUEUE_ON_FAILURE,
    # QUEUE_PAUSE_AFTER_FAILURES).
    on_failure: Mapped[str | None] = mapped_column(String(20))
    pause_after_failures: Mapped[int | None] = mapped_column(Integer)
    # Failed batches in a row are counted among those finished after this (a Start, a policy change).
    streak_from: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # When a repair round (the reconciler) last ran, whichever process ran it.
    repaired_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
