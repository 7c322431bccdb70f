"""Batches, their items (one per profile) and their log lines.

The database itself holds the queue's invariants: at most one running batch
(a partial unique index), a distinct queue rank for every queued batch and for
no other (a unique and a check constraint).

Queue positions are derived, not stored: a queued batch's position is the
number of queued batches ranked at or before it, so positions are whole
(1..n, no gaps, no duplicates) by construction. Storing them would make every
promotion, cancel and move rewrite the whole queue (about 200 ms with 10,000
queued batches, measured); ranks make each of them a one-row change.
"""

from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    case,
    func,
    literal,
    null,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Mapped, aliased, column_property, mapped_column

from app.extensions import Model
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
# The statuses a batch ends in: reaching one sends its completion webhook (app/models/callbacks.py).
TERMINAL_STATUSES = (BatchStatus.DONE, BatchStatus.FAILED, BatchStatus.STOPPED, BatchStatus.CANCELLED)


def sql_list(values: tuple[StrEnum, ...]) -> str:
    """Status names as SQL literals, for a partial index's predicate and the statements that must use it.

    Written into the text, never bound: a parameter can't prove a partial index's predicate in the
    generic plan of a prepared statement (tests/services/test_statement_plans.py).
    """
    return ", ".join(f"'{value.value}'" for value in values)


# "This batch holds the running slot", as the partial index batch_one_running says it: a query's
# condition that one index entry answers, however many batches there are (see sql_list).
RUNNING_SLOT = f"status IN ({sql_list(RUNNING_STATUSES)})"


class Batch(Model):
    __tablename__ = "batches"
    __table_args__ = (
        CheckConstraint(f"status IN ({sql_list(tuple(BatchStatus))})", name="batch_status_known"),
        CheckConstraint("(status = 'queued') = (queue_rank IS NOT NULL)", name="batch_rank_matches_status"),
        # Deferred, so that renumbering the whole queue can be one statement.
        UniqueConstraint("queue_rank", name="batch_rank_unique", deferrable=True, initially="DEFERRED"),
        Index(
            "batch_one_running",
            text("(true)"),
            unique=True,
            postgresql_where=text(RUNNING_SLOT),
        ),
        Index("batch_finished_order", text("created_at DESC"), postgresql_where=text("queue_rank IS NULL")),
        Index("batch_status", "status"),
        # Who created batches, one probe per name (app/services/batches.py: creators).
        Index("batch_created_by", "created_by"),
        # The last finished batches in order: the failure policy's count of failures in a row.
        Index("batch_finished_at", "finished_at", postgresql_where=text("status IN ('done', 'failed')")),
        # Each processor's last finished batches: the item durations the start estimates read.
        Index(
            "batch_recent_finished",
            "processor",
            text("finished_at DESC"),
            postgresql_where=text("status IN ('done', 'failed')"),
        ),
        # The oldest finished batches in every terminal status: what the retention purge deletes first.
        Index("batch_purged_order", "finished_at", postgresql_where=text(f"status IN ({sql_list(TERMINAL_STATUSES)})")),
        # The retries of a batch: what deleting it sets to NULL (without it, a scan per deleted batch).
        Index("batch_retry_of", "retry_of", postgresql_where=text("retry_of IS NOT NULL")),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(20), default=BatchStatus.QUEUED.value)
    # Order of the queued batches (sparse: a move takes a free value between
    # two neighbours); NULL for every batch not queued.
    queue_rank: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
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
    if TYPE_CHECKING:  # mapped below, once the class exists: the count refers to the table itself
        queue_position: Mapped[int | None]
    # Seconds one item may run before it fails as timed out (fixed when the batch is created).
    item_timeout: Mapped[float] = mapped_column(Float, default=3600.0, server_default=text("3600"))
    # The failed batch whose failed items this batch runs again (POST /batches/<id>/retry).
    retry_of: Mapped[int | None] = mapped_column(ForeignKey("batches.id", ondelete="SET NULL"))
    # The worker (Celery node name) whose run last claimed the batch.
    worker_name: Mapped[str | None] = mapped_column(String(255))
    # When the reconciler or a recovery last found the run gone and dispatched it again;
    # cleared by the next claim. The batch's waiting reason reads it.
    lost_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Where the batch is POSTed when it ends (a completion webhook), signed with the webhook
    # secret of the token that submitted it; NULL: no webhook.
    callback_url: Mapped[str | None] = mapped_column(String(2000))
    callback_token_id: Mapped[int | None] = mapped_column(ForeignKey("api_tokens.id", ondelete="SET NULL"))

    @property
    def pending_items(self) -> int:
        """Items not finished yet, the running one included."""
        return self.total_items - self.succeeded_items - self.failed_items


_ranked = aliased(Batch.__table__)


def queued_ahead(rank: Any, including: bool = False) -> Any:
    """How many queued batches rank before `rank` (or at it too): the one definition of a queue position.

    A queued batch's position is the count up to and including its own rank.
    The column property below counts it per row; a list numbers its page by
    counting ahead of the page's first queued batch once, then counting on
    (app/services/batches.py).
    """
    bound = _ranked.c.queue_rank <= rank if including else _ranked.c.queue_rank < rank
    return select(func.count()).where(bound)


# 0 for the running batch, 1..n for the queued ones, NULL for the rest: one index
# range count per queued row, loaded (and refreshed) with the row's columns.
Batch.queue_position = column_property(
    case(
        (Batch.status.in_([s.value for s in RUNNING_STATUSES]), literal(0)),
        (
            Batch.status == BatchStatus.QUEUED.value,
            queued_ahead(Batch.queue_rank, including=True).correlate(Batch.__table__).scalar_subquery(),
        ),
        else_=null(),
    )
)


class BatchItem(Model):
    __tablename__ = "batch_items"
    __table_args__ = (
        UniqueConstraint("batch_id", "position", name="batch_item_order"),
        CheckConstraint(f"status IN ({sql_list(tuple(ItemStatus))})", name="batch_item_status_known"),
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


# The levels a log filter knows, lowest first. A line of another level (a
# processor may log any word) shows only when nothing is filtered out.
LOG_LEVELS = ("debug", "info", "warning", "error")


class BatchLog(Model):
    __tablename__ = "batch_logs"
    # Ids are taken in commit order per batch, by a trigger (migration 0005): see
    # docs/architecture.md#log-lines-in-commit-order.
    __table_args__ = (
        Index("batch_log_by_batch", "batch_id", "id"),
        Index("batch_log_by_level", "batch_id", "level", "id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("batches.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    level: Mapped[str] = mapped_column(String(10), default="info")
    message: Mapped[str] = mapped_column(Text)
