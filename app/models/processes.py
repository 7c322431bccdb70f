"""The service's own processes (workers and beats) as they last said they were alive.

Each process writes its row every second from a thread of its own and
deletes it when it stops gracefully; a killed process's row simply ages. Kept
in PostgreSQL rather than Redis because its readers (the health check, the
pages' banner and the waiting reasons) read it in the same snapshot as the
queue itself, and because it then says the same whichever broker is in use.
"""

from datetime import datetime

from sqlalchemy import ARRAY, CheckConstraint, DateTime, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.extensions import Model
from app.models._types import utcnow

WORKER = "worker"
BEAT = "beat"


class ServiceProcess(Model):
    __tablename__ = "service_processes"
    __table_args__ = (CheckConstraint(f"kind IN ('{WORKER}', '{BEAT}')", name="service_process_kind_known"),)

    # Celery's node name for a worker (celery@host), beat@host:pid for a beat.
    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    kind: Mapped[str] = mapped_column(String(10))
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    pool: Mapped[str | None] = mapped_column(String(50))
    concurrency: Mapped[int | None] = mapped_column(Integer)
    queues: Mapped[list[str]] = mapped_column(ARRAY(Text), default=list)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
