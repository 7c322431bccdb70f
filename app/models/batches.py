"""Batches, their items (one per profile) and their log lines.

The database itself holds the queue's invariants: at most one running batch
(a partial unique index), positions unique (a deferred unique constraint, so a
whole block of positions can shift in one statement), and a status that agrees
with its position (check constraints).
"""

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Mapped, mapped_column

from app.extensions import db
from app.models._types import utcnow


class BatchStatus(StrEnum):
    QUEUED = "queued"
    IN_PROGRESS = "in_progress"
    STOPPING = "stopping"
    DONE = "done"
    FAILED = "failed"
    STOPPED = "stopped"
    CANCELLED = "cancelled"


class ItemStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


RUNNING_STATUSES = (BatchStatus.IN_PROGRESS, BatchStatus.STOPPING)
TERMINAL_STATUSES = (BatchStatus.DONE, BatchStatus.FAILED, BatchStatus.STOPPED, BatchStatus.CANCELLED)


def _sql_list(values: tuple[StrEnum, ...]) -> str:
    return ", ".join(f"'{value.value}'" for value in values)


class Batch(db.Model):
    __tablename__ = "batches"
    __table_args__ = (
        CheckConstraint(f"status IN ({_sql_list(tuple(BatchStatus))})", name="batch_status_known"),
        CheckConstraint(
            f"(status IN ({_sql_list(RUNNING_STATUSES)}) AND queue_position = 0)"
            f" OR (status = 'queued' AND queue_position >= 1)"
            f" OR (status IN ({_sql_list(TERMINAL_STATUSES)}) AND queue_position IS NULL)",
            name="batch_position_matches_status",
        ),
        UniqueConstraint("queue_position", name="batch_position_unique", deferrable=True, initially="DEFERRED"),
        Index(
            "batch_one_running",
            text("(true)"),
            unique=True,
            postgresql_where=text(f"status IN ({_sql_list(RUNNING_STATUSES)})"),
        ),
        Index("batch_finished_order", text("created_at DESC"), postgresql_where=text("queue_position IS NULL")),
        Index("batch_status", "status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(20), default=BatchStatus.QUEUED.value)
    queue_position: Mapped[int | None] = mapped_column(Integer, nullable=True)
    processor: Mapped[str] = mapped_column(String(100))
    parameters: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    profile_ids: Mapped[list[int]] = mapped_column(ARRAY(Integer))
    total_items: Mapped[int] = mapped_column(Integer, default=0)
    succeeded_items: Mapped[int] = mapped_column(Integer, default=0)
    failed_items: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    error: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[str | None] = mapped_column(String(200))
    # Idempotency-Key of the creating request and a digest of its body.
    idempotency_key: Mapped[str | None] = mapped_column(String(200), unique=True)
    request_digest: Mapped[str | None] = mapped_column(String(64))
    # Fencing token: the id of the current run dispatch; a run holding an older one writes nothing.
    dispatch_token: Mapped[str | None] = mapped_column(String(64))
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    run_attempts: Mapped[int] = mapped_column(Integer, default=0)
    stop_requested_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    stop_requested_by: Mapped[str | None] = mapped_column(String(200))

    @property
    def pending_items(self) -> int:
        """Items not finished yet, the running one included."""
        return self.total_items - self.succeeded_items - self.failed_items


class BatchItem(db.Model):
    __tablename__ = "batch_items"
    __table_args__ = (
        UniqueConstraint("batch_id", "position", name="batch_item_order"),
        CheckConstraint(f"status IN ({_sql_list(tuple(ItemStatus))})", name="batch_item_status_known"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("batches.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    profile_id: Mapped[int] = mapped_column(ForeignKey("profiles.id"), index=True)
    status: Mapped[str] = mapped_column(String(20), default=ItemStatus.PENDING.value)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    result: Mapped[Any | None] = mapped_column(JSONB)
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class BatchLog(db.Model):
    __tablename__ = "batch_logs"
    __table_args__ = (Index("batch_log_by_batch", "batch_id", "id"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("batches.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    level: Mapped[str] = mapped_column(String(10), default="info")
    message: Mapped[str] = mapped_column(Text)
