"""Which workers and beats are alive, from the heartbeats they record themselves.

Each worker and beat writes its row in service_processes every
HEARTBEAT_SECONDS (workers/liveness.py) and deletes it when it stops
gracefully; a killed one stops writing and counts as gone once MISSED_BEATS
heartbeats are late. Readers never ask the processes themselves: a broadcast
ping on every health check read any busy moment of a worker as "no worker".
Times are the database's own (now()), so hosts with skewed clocks agree.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, text

from app.extensions import db
from app.models.processes import BEAT, WORKER

# How often every worker and beat records that it is alive.
HEARTBEAT_SECONDS = 1.0
# A process whose record is this many heartbeats late counts as gone.
MISSED_BEATS = 3
# Records this old are deleted by the repair rounds: the process is long gone.
FORGET_AFTER_SECONDS = 3600.0

# This process's worker node name (celery@host), set when a worker starts, before
# its pool processes fork: a run records it on its batch. Celery's own
# request.hostname is the bare host name in some pools.
this_worker: str | None = None


@dataclass(frozen=True)
class ProcessRecord:
    """What a process says about itself in each heartbeat."""

    name: str
    kind: str
    host: str
    pid: int
    pool: str | None = None
    concurrency: int | None = None
    queues: tuple[str, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class LiveProcess:
    """A process whose heartbeat is recent, with the batch its run holds (workers only)."""

    name: str
    kind: str
    host: str
    pool: str | None
    concurrency: int | None
    queues: list[str]
    batch: int | None
    last_seen: datetime


_RECORD = text(
    """
    INSERT INTO service_processes (name, kind, host, pid, pool, concurrency, queues, started_at, last_seen_at)
    VALUES (:name, :kind, :host, :pid, :pool, :concurrency, :queues, now(), now())
    ON CONFLICT (name) DO UPDATE SET kind = excluded.kind, host = excluded.host, pid = excluded.pid,
        pool = excluded.pool, concurrency = excluded.concurrency, queues = excluded.queues,
        started_at = CASE WHEN service_processes.pid = excluded.pid THEN service_processes.started_at ELSE now() END,
        last_seen_at = now()
    """
)

# The live processes and, for a worker, the running batch its run claimed.
_ALIVE = text(
    """
    SELECT p.name, p.kind, p.host, p.pool, p.concurrency, p.queues, p.last_seen_at,
        (SELECT b.id FROM batches b
         WHERE b.status IN ('in_progress', 'stopping') AND b.worker_name = p.name) AS batch
    FROM service_processes p
    WHERE p.last_seen_at > now() - make_interval(secs => :stale)
    ORDER BY p.kind DESC, p.name
    """
)


def record(connection: Connection, process: ProcessRecord) -> None:
    """Say that the process is alive now (on an autocommit connection of its own)."""
    connection.execute(_RECORD, _parameters(process))


def forget(connection: Connection, name: str) -> None:
    """Remove a process's record: it is stopping gracefully."""
    connection.execute(text("DELETE FROM service_processes WHERE name = :name"), {"name": name})


# The worker that claimed a batch is known to be gone: its record aged out (it was
# killed), or a process of the same name started since the run's last heartbeat
# (it was killed and restarted). A record deleted by a graceful stop proves
# nothing: such a worker hands its run back, and the heartbeat timeout applies.
_CLAIMER_GONE = text(
    """
    SELECT EXISTS (
        SELECT 1 FROM batches b JOIN service_processes p ON p.name = b.worker_name
        WHERE b.id = :id AND (
            p.last_seen_at <= now() - make_interval(secs => :stale) OR p.started_at > b.heartbeat_at
        )
    )
    """
)


def claimer_gone(batch_id: int) -> bool:
    """Whether the worker whose run claimed the batch has died since (for a batch whose lease is free)."""
    return bool(db.session.scalar(_CLAIMER_GONE, {"id": batch_id, "stale": MISSED_BEATS * HEARTBEAT_SECONDS}))


def forget_long_gone() -> int:
    """Delete the records of processes silent for an hour (in the caller's transaction)."""
    result: Any = db.session.execute(
        text("DELETE FROM service_processes WHERE last_seen_at < now() - make_interval(secs => :age)"),
        {"age": FORGET_AFTER_SECONDS},
    )
    return int(result.rowcount or 0)


# The processes alive, as one JSON array, in their order: for a statement reading more than them.
ALIVE_JSON = f"(SELECT coalesce(json_agg(alive), '[]') FROM ({_ALIVE.text}) AS alive)"


def stale_seconds() -> float:
    """How long a process may go unheard before it counts as gone (`:stale` of the statements)."""
    return MISSED_BEATS * HEARTBEAT_SECONDS


def alive() -> list[LiveProcess]:
    """The workers and beats heard from recently, workers first, by name."""
    return [_process(dict(row._mapping)) for row in db.session.execute(_ALIVE, {"stale": stale_seconds()})]


def alive_from_json(rows: list[dict[str, Any]]) -> list[LiveProcess]:
    """The processes of ALIVE_JSON's array."""
    return [_process({**row, "last_seen_at": datetime.fromisoformat(row["last_seen_at"])}) for row in rows]


def _process(row: Mapping[str, Any]) -> LiveProcess:
    return LiveProcess(
        name=row["name"],
        kind=row["kind"],
        host=row["host"],
        pool=row["pool"],
        concurrency=row["concurrency"],
        queues=list(row["queues"] or []),
        batch=row["batch"],
        last_seen=row["last_seen_at"],
    )


def workers(processes: list[LiveProcess]) -> list[LiveProcess]:
    return [process for process in processes if process.kind == WORKER]


def beats(processes: list[LiveProcess]) -> list[LiveProcess]:
    return [process for process in processes if process.kind == BEAT]


def _parameters(process: ProcessRecord) -> dict[str, Any]:
    return {
        "name": process.name,
        "kind": process.kind,
        "host": process.host,
        "pid": process.pid,
        "pool": process.pool,
        "concurrency": process.concurrency,
        "queues": list(process.queues),
    }
