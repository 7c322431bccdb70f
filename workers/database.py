"""How a worker uses PostgreSQL: tuned for the handoff between two batches.

Two choices differ from the web app's, each worth a measured part of the
handoff (bench/handoff.py, about 8 ms before either):

- No ping before each use of a pooled connection (0.6 ms: a round trip at three
  steps of the handoff). A connection that died with a PostgreSQL restart fails
  its first statement instead; SQLAlchemy then replaces every connection of
  that pool, and the task is repaired as after any database error: promotions
  retry, a failed run is recovered at once (tests/faults/test_database_faults.py).
- Commits don't wait for the disk (synchronous_commit off: 0.7 ms, the flush
  of the run's end and of the promotion). Only a crash of the database server
  itself can lose such a commit, and only the last fraction of a second of
  them (at most three times wal_writer_delay, 0.6 s by default); the database
  stays consistent, and every rule it enforces holds. What a worker commits is
  its own progress, which the service redoes by itself: a lost promotion or
  claim is promoted again, a lost end leaves the batch running without a
  lease, so the reconciler runs its last item again (items run at least once,
  under the same idempotency key). What the API commits on someone's behalf,
  a new batch, a stop, a move, still waits for the disk.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, event

from app import ENGINE_OPTIONS

WORKER_ENGINE_OPTIONS = {**ENGINE_OPTIONS, "pool_pre_ping": False}


def commit_without_waiting_for_disk(engine: Engine) -> None:
    """Turn synchronous_commit off on every connection the engine opens from now on."""

    @event.listens_for(engine, "connect")
    def _asynchronous_commit(dbapi_connection: Any, _record: Any) -> None:
        autocommit = dbapi_connection.autocommit
        dbapi_connection.autocommit = True
        try:
            dbapi_connection.execute("SET synchronous_commit = off")
        finally:
            dbapi_connection.autocommit = autocommit
