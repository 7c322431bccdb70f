"""Run leases: a session-level advisory lock held by the process running a batch.

The lock lives as long as the run's own database connection, so when that
process dies PostgreSQL frees it within milliseconds: "is the lease held" is a
reliable liveness test, and a duplicate delivery of the same run can't take it.
"""

from __future__ import annotations

from sqlalchemy import Connection, text

from app.extensions import db

# First key of the two-int advisory lock space, so our locks can't collide with others'.
LEASE_CLASS = 0x6271  # "bq"


def try_acquire(connection: Connection, batch_id: int) -> bool:
    """Take the batch's lease on this connection, or report that another run has it."""
    return bool(
        connection.execute(
            text("SELECT pg_try_advisory_lock(:cls, :id)"), {"cls": LEASE_CLASS, "id": batch_id}
        ).scalar()
    )


def release(connection: Connection, batch_id: int) -> None:
    """Give the lease back (closing the connection does too)."""
    connection.execute(text("SELECT pg_advisory_unlock(:cls, :id)"), {"cls": LEASE_CLASS, "id": batch_id})


def held_sql(batch_id: str) -> str:
    """SQL telling whether some live run holds the lease of the batch whose id `batch_id` (an expression) is.

    Its LEASE_CLASS is the parameter `:lease_class`.
    """
    return (
        "EXISTS (SELECT 1 FROM pg_locks l JOIN pg_database d ON d.oid = l.database"
        " WHERE l.locktype = 'advisory' AND l.granted AND d.datname = current_database()"
        f" AND l.classid = :lease_class AND l.objid = {batch_id} AND l.objsubid = 2)"
    )


_IS_HELD = text(f"SELECT {held_sql(':id')}")


def is_held(batch_id: int) -> bool:
    """Tell whether some live run holds the batch's lease, without taking it."""
    return bool(db.session.execute(_IS_HELD, {"lease_class": LEASE_CLASS, "id": batch_id}).scalar())
