"""Taking the batch over: the lease, the attempt, the items left, the first of them started, in one statement."""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection

from app.models._types import utcnow
from app.processors import ProfileData
from app.services import leases
from app.services.queue_statements import statement


@dataclass
class PendingItem:
    id: int
    position: int
    profile: ProfileData
    attempts: int  # attempts begun before this run


@dataclass
class Claimed:
    """What a run learns when it takes over its batch."""

    batch_id: int
    processor: str
    parameters: dict[str, Any]
    total: int
    items: list[PendingItem]
    first_started: bool
    item_timeout: float  # seconds each item may run
    claimed_at: float  # time.monotonic() when the claim started the first item


# Guarantees: one run at a time works on a batch, and only the run it was
# dispatched to. On the lease's own (autocommit) connection, because it lies
# between one batch's end and the next one's first item: it takes the lease,
# and only if it got it and the batch is in progress under this run's token, it
# bumps the attempt, logs the start, reads the items left and marks the first
# of them running. An item already running is left over from an attempt that
# died with the same token (a message redelivered after a lost connection or a
# worker shutdown): this run holds the lease, so nobody else is working on it,
# and it is done again.
LEASE_AND_CLAIM = statement(
    """
    WITH lease AS (
        SELECT pg_try_advisory_lock(:lease_class, :id) AS taken
    ), own AS (
        UPDATE batches SET run_attempts = run_attempts + 1, heartbeat_at = :now, worker_name = :worker, lost_at = NULL
        WHERE id = :id AND dispatch_token = :token AND status = :status_in_progress AND (SELECT taken FROM lease)
        RETURNING id, processor, parameters, total_items, run_attempts, item_timeout
    ), logged AS (
        INSERT INTO batch_logs (batch_id, at, level, message)
        SELECT id, :now, 'info', 'run began on ' || :host
            || CASE WHEN run_attempts > 1 THEN ' (attempt ' || run_attempts || ')' ELSE '' END
        FROM own
    ), pending AS (
        SELECT i.id, i.position, p.id AS profile_id, p.name, p.attributes, i.attempts
        FROM batch_items i JOIN profiles p ON p.id = i.profile_id
        WHERE i.batch_id IN (SELECT id FROM own) AND i.status IN (:item_status_pending, :item_status_running)
    ), first_started AS (
        UPDATE batch_items SET status = :item_status_running, attempts = attempts + 1, started_at = :now, error = NULL
        WHERE id = (SELECT id FROM pending ORDER BY position LIMIT 1)
        RETURNING id
    )
    SELECT lease.taken, own.id IS NOT NULL AS claimed, own.processor, own.parameters, own.total_items, own.item_timeout,
        (SELECT json_agg(json_build_array(id, position, profile_id, name, attributes, attempts) ORDER BY position)
         FROM pending) AS items,
        EXISTS (SELECT 1 FROM first_started) AS first_started
    FROM lease LEFT JOIN own ON true
    """
)


def lease_and_claim(
    lease_connection: Connection, batch_id: int, token: str, worker_name: str | None
) -> tuple[bool, Claimed | None]:
    """Take the batch's lease and, with it, the batch: say whether the lease was free and what is left to do."""
    parameters = {
        "lease_class": leases.LEASE_CLASS,
        "id": batch_id,
        "token": token,
        "now": utcnow(),
        "host": socket.gethostname(),
        "worker": worker_name,
    }
    claimed_at = time.monotonic()  # the first item's start, for its time limit
    row = lease_connection.execute(LEASE_AND_CLAIM, parameters).one()
    if not row.taken or not row.claimed:
        return bool(row.taken), None
    items = [
        PendingItem(item_id, position, ProfileData(profile_id, name, attributes or {}), attempts)
        for item_id, position, profile_id, name, attributes, attempts in row.items or []
    ]
    return True, Claimed(
        batch_id,
        row.processor,
        dict(row.parameters),
        row.total_items,
        items,
        row.first_started,
        item_timeout=row.item_timeout,
        claimed_at=claimed_at,
    )
