"""A new batch in one statement: its row at the end of the queue, its items and its log line.

Creation is the queue change made most often, and every round trip it makes
under the queue lock is one every other creation waits behind. Under the web
process's gevent workers it is worse than a round trip: a greenlet whose
answer from PostgreSQL has arrived runs again only after the greenlets ahead
of it in its process have run up to their own next wait, so each round trip
under the lock held it for several other requests' work (measured: 8
creations of a paused queue waiting on the lock while its holder sat "idle in
transaction"). Hence `commit_new_batch`: the lock, this statement and the
commit go to PostgreSQL in one message, one round trip, and the lock is held
only while PostgreSQL runs them. The lock's statement comes first, so this
statement's snapshot, taken after it, sees the last rank given out.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg.rows import dict_row
from sqlalchemy import Dialect
from sqlalchemy.orm import make_transient_to_detached

from app.extensions import db
from app.models import Batch
from app.models.queue_state import QUEUE_STATE_ID
from app.services import queue_ranks, queue_tx
from app.services.queue_statements import SLOT_TAKEN, statement
from app.services.status_counts import count_of

if TYPE_CHECKING:
    from app.services.queue_manager import NewBatch

# Guarantees: the batch joins the end of the queue (the highest rank so far
# plus the gap), queued, with one pending item per profile in the given order
# and its creation's log line, all or nothing. It also reports, in the same
# snapshot, the batch's position (every queued batch is ahead of it) and
# whether a batch runs: if one does, its end's chained promotion comes after
# this commit (it waits for the queue lock), so no promotion is needed here.
# Nothing is written when the queue's state row is missing: there was no row to lock.
CREATE_BATCH = statement(
    f"""
    WITH created AS (
        INSERT INTO batches (name, status, queue_rank, processor, parameters, profile_ids, total_items,
            succeeded_items, failed_items, created_at, created_by, idempotency_key, request_digest, run_attempts,
            item_timeout, retry_of, callback_url, callback_token_id)
        SELECT :name, :status_queued, last.rank + :gap, :processor,
            CAST(:parameters AS jsonb), CAST(:profile_ids AS integer[]), :total, 0, 0, :now, :created_by,
            :idempotency_key, :request_digest, 0, :item_timeout, :retry_of, :callback_url, :callback_token_id
        FROM (SELECT coalesce(max(queue_rank), 0) AS rank FROM batches) AS last
        WHERE EXISTS (SELECT 1 FROM queue_state WHERE id = :queue_id)
        RETURNING *
    ), items AS (
        INSERT INTO batch_items (batch_id, position, profile_id, status, attempts)
        SELECT created.id, item.place - 1, item.profile_id, :item_status_pending, 0
        FROM created, unnest(CAST(:profile_ids AS integer[])) WITH ORDINALITY AS item(profile_id, place)
    ), logged AS (
        INSERT INTO batch_logs (batch_id, at, level, message)
        SELECT created.id, :now, 'info', :message FROM created
    )
    SELECT created.*,
        {count_of("status_queued")} + 1 AS position,
        {SLOT_TAKEN} AS busy
    FROM created
    """
)

_COLUMNS = tuple(column.key for column in Batch.__table__.columns)


@dataclass(frozen=True)
class Created:
    """The new batch's row as written, its position, and whether a batch was running meanwhile."""

    row: Mapping[str, Any]  # the statement's row: the batch's columns, its position and whether a batch runs
    position: int
    busy: bool

    @property
    def id(self) -> int:
        return int(self.row["id"])


def insert_batch(new: NewBatch, now: datetime) -> Created | None:
    """Write the batch, its items and its log line in one round trip (inside a queue change)."""
    row = db.session.execute(CREATE_BATCH, _parameters(new, now)).mappings().one_or_none()
    return Created(dict(row), int(row["position"]), bool(row["busy"])) if row is not None else None


def commit_new_batch(new: NewBatch, now: datetime) -> tuple[Created, bool]:
    """Lock the queue, write the batch and commit, in one round trip; return it and whether the queue is paused.

    The request's transaction so far (its profiles locked) commits with it.
    The three statements travel as one message (the simple query protocol,
    the values bound by the driver on this side), so PostgreSQL runs them
    back to back: the lock is never held while this process schedules its
    other requests. A pipeline of separate messages was not enough: under
    gevent each message sent is a switch to the other greenlets.
    """
    queue_tx.ensure_state_row()
    connection = db.session.connection()
    driver = connection.connection.driver_connection
    assert isinstance(driver, psycopg.Connection)
    script, bound = _script(connection.dialect)
    try:
        cursor = psycopg.ClientCursor(driver, row_factory=dict_row)
        cursor.execute(script, bound | _parameters(new, now))
        state = cursor.fetchone()
        cursor.nextset()
        row = cursor.fetchone()
    except BaseException:
        db.session.rollback()
        raise
    db.session.commit()  # only ends the session's transaction: PostgreSQL's is committed already
    if state is None or row is None:  # ensure_state_row saw it: only a hand-made DELETE removes it
        raise RuntimeError("the queue's state row is missing: no batch was created")
    return Created(row, int(row["position"]), bool(row["busy"])), bool(state["paused"])


@functools.cache
def _script(dialect: Dialect) -> tuple[str, dict[str, Any]]:
    """The lock, the creation and the commit as one text for the driver, and the parameters bound into it."""
    lock = queue_tx.LOCK_QUEUE.compile(dialect=dialect)
    create = CREATE_BATCH.compile(dialect=dialect)
    return f"{lock};\n{create};\nCOMMIT", {**lock.params, **create.params}


def _parameters(new: NewBatch, now: datetime) -> dict[str, Any]:
    what = f" to retry the failed items of batch {new.retry_of}" if new.retry_of else ""
    message = f"created by {new.created_by or 'unknown'}{what} with {len(new.profile_ids)} profiles"
    return {
        "name": new.name,
        "gap": queue_ranks.RANK_GAP,  # read at each call: tests narrow it
        "processor": new.processor,
        "parameters": json.dumps(new.parameters),
        "profile_ids": new.profile_ids,
        "total": len(new.profile_ids),
        "now": now,
        "created_by": new.created_by,
        "idempotency_key": new.idempotency_key,
        "request_digest": new.request_digest,
        "item_timeout": new.item_timeout,
        "retry_of": new.retry_of,
        "callback_url": new.callback_url,
        "callback_token_id": new.callback_token_id,
        "message": message,
        "queue_id": QUEUE_STATE_ID,
    }


def loaded_batch(created: Created) -> Batch:
    """The created batch as a session object, loaded from its written row: no read after the commit.

    Made after the commit, so the commit's expiry doesn't throw its values away.
    Only for a batch that is still as written (not promoted in the same change).
    """
    batch = Batch(**{key: created.row[key] for key in _COLUMNS})
    batch.queue_position = created.position
    make_transient_to_detached(batch)
    db.session.add(batch)
    return batch
