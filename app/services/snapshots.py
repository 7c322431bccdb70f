"""One snapshot per answer: the reads of a list or a page see the database at a single moment.

PostgreSQL's default (read committed) gives each statement its own snapshot, so
a page that counts, lists and numbers the queue in three statements could show
a move or a promotion half-done: queued batches at positions 2 to 13, no #1.
A repeatable-read transaction that only reads costs nothing extra and never
conflicts with the writers.
"""

from __future__ import annotations

from app.extensions import db


def read_snapshot() -> None:
    """End the request's transaction so far and begin one whose every read sees the same snapshot."""
    db.session.rollback()
    db.session.connection(execution_options={"isolation_level": "REPEATABLE READ"})


def release_connection() -> None:
    """End the request's transaction and give its pooled connection back, before it waits on something
    that may itself need a connection (app/views/batches.py: another viewer's render of the table)."""
    db.session.close()
