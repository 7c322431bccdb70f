"""Completion webhooks: one delivery per batch and terminal status (the outbox), and its attempts.

The delivery row is written by a trigger in the very transaction that makes the batch
terminal (whichever code path does it: a run's end in the hand-written handoff statements,
a stop, a cancel, a recovery), so a webhook can neither be lost to a crash after that commit
nor sent for a change that rolled back, and no hot statement of the queue had to change.
The trigger also notifies `CHANNEL` (delivered at commit) so a sender makes its first attempt
at once; senders poll as well, so a lost notification only delays it.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, DateTime, ForeignKey, Index, Integer, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from app.extensions import Model
from app.models._types import utcnow
from app.models.batches import TERMINAL_STATUSES

CHANNEL = "batchq_callbacks"


def trigger_sql() -> str:
    """The trigger that records a delivery when a batch with a callback_url becomes terminal.

    Status names are bound from BatchStatus here, once, rather than typed into the migration.
    A batch can reach the same status twice (stopped, resumed, stopped again): its receiver
    would take the second POST, under the same Idempotency-Key, for a repeat of the first,
    so only the first is recorded.
    """
    terminal = ", ".join(f"'{status.value}'" for status in TERMINAL_STATUSES)
    return f"""
CREATE FUNCTION batches_record_callback() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    delivery bigint;
BEGIN
    INSERT INTO callback_deliveries (batch_id, status, created_at, next_attempt_at, attempts)
        VALUES (NEW.id, NEW.status, now(), now(), 0)
        ON CONFLICT (batch_id, status) DO NOTHING
        RETURNING id INTO delivery;
    IF delivery IS NOT NULL THEN
        PERFORM pg_notify('{CHANNEL}', delivery::text);
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER batches_record_callback AFTER UPDATE OF status ON batches
    FOR EACH ROW
    WHEN (NEW.callback_url IS NOT NULL AND NEW.status IN ({terminal})
          AND OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION batches_record_callback();
"""


class CallbackDelivery(Model):
    """A webhook to send: due at `next_attempt_at` until delivered or given up."""

    __tablename__ = "callback_deliveries"
    __table_args__ = (
        UniqueConstraint("batch_id", "status", name="callback_delivery_once"),
        # What senders look for: the pending deliveries, soonest first.
        Index(
            "callback_delivery_due",
            "next_attempt_at",
            postgresql_where=text("delivered_at IS NULL AND gave_up_at IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("batches.id", ondelete="CASCADE"))
    # The terminal status it announces (the Idempotency-Key is batch-<id>-<status>).
    status: Mapped[str] = mapped_column(String(20))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # When the next attempt is due; a sender moves it past the send's timeout while it sends (a lease).
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # The body, fixed at the first attempt, so that every retry sends the same bytes.
    payload: Mapped[str | None] = mapped_column(Text)
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    gave_up_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class CallbackAttempt(Model):
    """One POST of a delivery: when, the answer's status (None without one) and what went wrong."""

    __tablename__ = "callback_attempts"
    __table_args__ = (
        Index("callback_attempt_by_batch", "batch_id", "id"),
        # The attempts of a delivery: what deleting the delivery cascades to (a batch's purge).
        Index("callback_attempt_by_delivery", "delivery_id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    delivery_id: Mapped[int] = mapped_column(ForeignKey("callback_deliveries.id", ondelete="CASCADE"))
    batch_id: Mapped[int] = mapped_column(ForeignKey("batches.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    status_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
