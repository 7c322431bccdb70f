"""The hand-written statements of the handoff: each one round trip, each guarding its own preconditions.

These lie between one batch's last item and the next batch's first item, the
path bench.handoff measures, so each does in one statement what would
otherwise take several round trips. Their status names are parameters bound
here from BatchStatus and ItemStatus (`:status_<name>`, `:item_status_<name>`),
except where a partial index must serve the statement: those are written into
the text from BatchStatus (`sql_list`), since a prepared statement's generic
plan can't prove a partial index's predicate from a parameter. The rules they carry out are the rows of the table in
app/services/queue_manager.py. Everything simpler is SQLAlchemy Core beside
the code that runs it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import TextClause, text

from app.models import BatchStatus, ItemStatus
from app.models._types import utcnow
from app.models.batches import RUNNING_SLOT, sql_list
from app.services import leases

_STATUS_NAMES = {f"status_{status.name.lower()}": status.value for status in BatchStatus} | {
    f"item_status_{status.name.lower()}": status.value for status in ItemStatus
}


def statement(sql: str) -> TextClause:
    """A hand-written statement with the status names it mentions bound from BatchStatus and ItemStatus."""
    used = {name: value for name, value in _STATUS_NAMES.items() if re.search(rf":{name}\b", sql)}
    return text(sql).bindparams(**used)


@dataclass(frozen=True)
class ItemWrite:
    """An item's outcome, as END_RUN writes it: each field is one of their parameters.

    The defaults are "no item": END_RUN writes nothing for it, and adds nothing to the counters.
    """

    item_id: int | None = None
    item_status: str | None = None
    item_result: str | None = None  # the processor's result, as JSON text
    item_error: str | None = None
    item_interrupted: bool = False  # left pending by a stop: its start is forgotten
    item_finished_at: datetime | None = None
    item_at: datetime | None = None  # when its log lines were written
    succeeded: int = 0
    failed: int = 0
    lines: str = "[]"  # its log lines, a JSON list of {"level", "message"}

    def parameters(self) -> dict[str, Any]:
        """The statements' parameters for this item."""
        return dict(vars(self))


NO_ITEM = ItemWrite()

# The item's outcome, written only for a batch that the statement's `{owner}` CTE found owned by the run.
_WRITE_ITEM = """
    UPDATE batch_items SET status = :item_status, result = CAST(:item_result AS jsonb), error = :item_error,
        started_at = CASE WHEN :item_interrupted THEN NULL ELSE started_at END,
        finished_at = :item_finished_at
    WHERE id = CAST(:item_id AS integer) AND batch_id IN (SELECT id FROM {owner})
"""

# The log lines a run sends as JSON, in their order (`line.place`).
_LINES = """ROWS FROM (jsonb_to_recordset(CAST(:lines AS jsonb)) AS (level text, message text))
            WITH ORDINALITY AS line(level, message, place)"""

# Guarantees: a group of items' outcomes, the batch's counters and the items'
# log lines are written together, and only while the run's token is the
# batch's (0 rows: the run was fenced off). Each row of :items is one item of
# the group (app/services/runs/items.py): its outcome, or `pending` for one left
# by a stop (its start forgotten). :lines are the group's log lines in their
# order, each stamped with its item's end. A run's last item, when nothing
# else waits to be written with it, is written by END_RUN instead.
FINISH_ITEMS = statement(
    """
    WITH own AS (
        SELECT id FROM batches WHERE id = :batch_id AND dispatch_token = :token FOR UPDATE
    ), written AS (
        SELECT * FROM jsonb_to_recordset(CAST(:items AS jsonb)) AS w(id bigint, status text, result text,
            error text, finished_at timestamptz)
    ), item AS (
        UPDATE batch_items i SET status = w.status, result = CAST(w.result AS jsonb), error = w.error,
            started_at = CASE WHEN w.status = :item_status_pending THEN NULL ELSE i.started_at END,
            finished_at = w.finished_at
        FROM written w
        WHERE i.id = w.id AND i.batch_id IN (SELECT id FROM own)
    ), counters AS (
        UPDATE batches SET
            succeeded_items = succeeded_items + (SELECT count(*) FROM written WHERE status = :item_status_succeeded),
            failed_items = failed_items + (SELECT count(*) FROM written WHERE status = :item_status_failed)
        WHERE id IN (SELECT id FROM own)
    ), logged AS (
        INSERT INTO batch_logs (batch_id, at, level, message)
        SELECT own.id, line.at, line.level, line.message
        FROM own, ROWS FROM (jsonb_to_recordset(CAST(:lines AS jsonb)) AS (at timestamptz, level text, message text))
            WITH ORDINALITY AS line(at, level, message, place)
        ORDER BY line.place
    )
    SELECT count(*) FROM own
    """
)

# What the metrics of a promotion need (app/metrics: the time queued, the
# handoff), read in the promotion's own statement rather than a round trip of
# their own: the promoted batch's creation and start, and the end of the last batch that
# finished before it. Its statuses are written into the text (from BatchStatus),
# not bound: only then can every plan, a prepared statement's generic one too,
# prove the partial index batch_finished_at usable and read one index entry.
_ENDED = sql_list((BatchStatus.DONE, BatchStatus.FAILED))
# Whether a batch holds the running slot: one entry of the partial index batch_one_running, however
# many batches there are, for the same reason (bench.size: 161 ms a promotion at a million batches
# while the statuses were bound, the generic plan reading every batch; 0.3 ms planned with the values).
SLOT_TAKEN = f"EXISTS (SELECT 1 FROM batches WHERE {RUNNING_SLOT})"
_PROMOTED_TIMES = f"""(SELECT created_at FROM promoted) AS created_at, (SELECT at FROM start) AS started_at,
        (SELECT max(finished_at) FROM batches WHERE status IN ({_ENDED})) AS previous_finished_at"""

# The head (the CTE `head` before it) becomes in_progress with a fresh dispatch token, and its
# "started" line is written: the part both promotions share. Its start is never stamped before the
# end it follows: :now is read before the statement, and a run's end (END_RUN, on another host
# perhaps, outside the queue lock) may commit in between with a later clock reading. The snapshot
# that saw no batch running sees that end, so the greatest of the two is a start after it.
_PROMOTE_HEAD_AND_LOG = f"""start AS (
        SELECT greatest(CAST(:now AS timestamptz),
            (SELECT max(finished_at) FROM batches WHERE status IN ({_ENDED})),
            (SELECT max(finished_at) FROM batches WHERE status IN ({sql_list((BatchStatus.STOPPED,))}))) AS at
    ), promoted AS (
        UPDATE batches b SET status = :status_in_progress, queue_rank = NULL, started_at = start.at,
            dispatch_token = :token, heartbeat_at = start.at
        FROM head, start
        WHERE b.id = head.id
        RETURNING b.id, b.created_at
    ), logged AS (
        INSERT INTO batch_logs (batch_id, at, level, message)
        SELECT promoted.id, start.at, 'info', 'started' FROM promoted, start
        RETURNING batch_id
    )"""

# Guarantees: at most one batch runs. Under the queue lock (its snapshot is
# current), and only if no batch is in progress or stopping, the head (lowest
# rank) becomes in_progress with a fresh dispatch token, and its log line is
# written. The batches behind it move up by themselves: positions are counted.
PROMOTE_HEAD = statement(
    f"""
    WITH head AS (
        SELECT id FROM batches
        WHERE queue_rank IS NOT NULL
            AND NOT {SLOT_TAKEN}
        ORDER BY queue_rank LIMIT 1
    ), {_PROMOTE_HEAD_AND_LOG}
    SELECT batch_id AS promoted, {_PROMOTED_TIMES} FROM logged
    """
)

# Guarantees: the failure policy's pause and the promotion it holds back are
# decided in one snapshot. Like PROMOTE_HEAD, but only while fewer than
# :pause_after batches failed in a row (among those finished after
# :streak_from; a done batch ends the row). At the limit, with no batch running,
# the queue pauses instead, saying why (and the row is counted afresh from now).
# Used only while a policy is set, so the handoff's path is PROMOTE_HEAD's alone.
PROMOTE_HEAD_UNLESS_FAILING = statement(
    f"""
    WITH since AS (
        SELECT coalesce(CAST(:streak_from AS timestamptz), '-infinity') AS at
    ), last_done AS (
        SELECT coalesce(max(finished_at), (SELECT at FROM since)) AS at FROM batches
        WHERE status = :status_done AND finished_at > (SELECT at FROM since)
    ), streak AS (
        SELECT count(*) AS failed,
            NOT {SLOT_TAKEN} AS free
        FROM batches
        WHERE status = :status_failed AND finished_at > (SELECT at FROM since)
            AND finished_at > (SELECT at FROM last_done)
    ), paused AS (
        UPDATE queue_state SET paused = true, paused_by = 'failure policy', paused_at = :now,
            paused_reason = streak.failed || CASE WHEN streak.failed = 1 THEN ' failed batch' ELSE ' failed batches' END
                || ' in a row (failure policy)',
            draining = false, streak_from = :now
        FROM streak
        WHERE queue_state.id = :queue_id AND streak.free AND streak.failed >= :pause_after
        RETURNING streak.failed
    ), head AS (
        SELECT b.id FROM batches b, streak
        WHERE b.queue_rank IS NOT NULL AND streak.free AND streak.failed < :pause_after
        ORDER BY b.queue_rank LIMIT 1
    ), {_PROMOTE_HEAD_AND_LOG}
    SELECT (SELECT batch_id FROM logged) AS promoted, (SELECT failed FROM paused) AS paused_after,
        {_PROMOTED_TIMES}
    """
)

# Guarantees: a drain ends only between two batches. Under the queue lock, and
# only if no batch is in progress or stopping in the statement's snapshot, the
# queue pauses (as asked by whoever asked for the drain) and the drain is over.
# While a batch runs, nothing changes: its run's end chains a promotion, which
# comes here again.
PAUSE_DRAINED = statement(
    f"""
    UPDATE queue_state SET paused = true, paused_by = drain_by, paused_at = :now, paused_reason = 'drained',
        draining = false
    WHERE id = :queue_id AND draining
        AND NOT {SLOT_TAKEN}
    RETURNING drain_by
    """
)

# Guarantees: a run ends once, as its batch's rule says (queue_manager's
# table, "end run"): only while the batch is running and, with a token, only
# for the run holding it (else no row: None). It is stopped after a stop; done
# when every item succeeded and the run reported no error; failed otherwise,
# with the run's error, or how many items failed, or how many did not run. In
# the same statement: the run's last item (ItemWrite) and its counters, items
# left running back to pending, the item's log lines then the end's, and, for
# a run ending itself, its lease given back once the batch's row is locked, so
# nobody acting on a free lease finds the batch still running. FOR UPDATE reads
# the batch as it is now, whatever the statement's snapshot saw. One round
# trip, so a run's own end on its autocommit connection lies between two
# batches as briefly as it can.
END_RUN = statement(
    f"""
    WITH own AS (
        SELECT id, status, total_items, error,
            succeeded_items + :succeeded AS succeeded, failed_items + :failed AS failed
        FROM batches
        WHERE id = :id AND status IN (:status_in_progress, :status_stopping)
            AND (CAST(:token AS text) IS NULL OR dispatch_token = CAST(:token AS text))
        FOR UPDATE
    ), decided AS (
        SELECT id, total_items, succeeded, failed, total_items - succeeded - failed AS pending, error,
            CASE
                WHEN status = :status_stopping THEN CAST(:status_stopped AS text)
                WHEN CAST(:error AS text) IS NULL AND failed = 0 AND succeeded = total_items
                    THEN CAST(:status_done AS text)
                ELSE CAST(:status_failed AS text)
            END AS status
        FROM own
    ), outcome AS (
        SELECT id, succeeded, failed, pending, status,
            CASE
                WHEN status <> :status_failed THEN coalesce(CAST(:error AS text), error)
                WHEN CAST(:error AS text) IS NOT NULL THEN CAST(:error AS text)
                WHEN failed > 0 THEN failed || ' of ' || total_items || ' items failed'
                ELSE pending || ' of ' || total_items || ' items did not run'
            END AS error
        FROM decided
    ), last_item AS ({_WRITE_ITEM.format(owner="outcome")}
    ), ended AS (
        UPDATE batches b SET status = o.status, error = o.error, finished_at = :now,
            succeeded_items = o.succeeded, failed_items = o.failed
        FROM outcome o
        WHERE b.id = o.id
    ), left_pending AS (
        UPDATE batch_items SET status = :item_status_pending, started_at = NULL
        WHERE batch_id IN (SELECT id FROM outcome WHERE pending > 0) AND status = :item_status_running
            AND id IS DISTINCT FROM CAST(:item_id AS integer)
    ), logged AS (
        -- The item's lines in their order, then the end's line (closing sorts last).
        INSERT INTO batch_logs (batch_id, at, level, message)
        SELECT batch_id, at, level, message FROM (
            SELECT o.id AS batch_id, CAST(:item_at AS timestamptz) AS at, line.level, line.message,
                false AS closing, line.place
            FROM outcome o, {_LINES}
            UNION ALL
            SELECT id, :now, CASE WHEN status = :status_failed THEN 'error' ELSE 'info' END,
                CASE
                    WHEN status = :status_stopped THEN 'stopped (' || pending || ' items left pending)'
                    WHEN status = :status_done THEN 'finished: done'
                    ELSE 'finished: failed (' || error || ')'
                END,
                true, 0
            FROM outcome
        ) lines
        ORDER BY closing, place
    ), released AS (
        SELECT pg_advisory_unlock(:lease_class, :id) FROM (SELECT count(*) FROM own) AS own_first
        WHERE :release_lease
    )
    SELECT (SELECT status FROM outcome) AS status, (SELECT count(*) FROM released) AS released
    """
)


def end_run_parameters(
    batch_id: int,
    error: str | None,
    token: str | None = None,
    last_item: ItemWrite = NO_ITEM,
    release_lease: bool = False,
) -> dict[str, Any]:
    """END_RUN's parameters: the batch, the fencing token (None: whichever run), the run's error and last item."""
    return {
        **last_item.parameters(),
        "id": batch_id,
        "token": token,
        "error": error,
        "now": utcnow(),
        "lease_class": leases.LEASE_CLASS,
        "release_lease": release_lease,
    }


# Guarantees: a processor that ignored its item's time limit holds up nothing
# (the run's watcher sends this on the run's own autocommit connection; the
# stuck processor holds the run's thread). Only while the batch carries the
# run's token (else no row restarted): the item fails and is logged, and the
# batch gets a fresh token, so the next run takes over at the next item; its
# status stays. run_attempts goes back down by the one the ended run's claim
# added (the next claim adds it again): a deliberate restart is not a lost run
# and must not bring the batch nearer to BATCH_MAX_RUN_ATTEMPTS. The lease is
# given back whatever the outcome, once the batch's row is locked: this run is
# over either way, and a lease left to an abandoned thread would turn the next
# run of the batch into a "duplicate".
RESTART_STALLED_RUN = statement(
    f"""
    WITH own AS (
        SELECT id FROM batches
        WHERE id = :id AND dispatch_token = :token AND status IN (:status_in_progress, :status_stopping)
        FOR UPDATE
    ), item AS (
        UPDATE batch_items SET status = :item_status_failed, error = :item_error, finished_at = :now
        WHERE id = :item_id AND batch_id IN (SELECT id FROM own) AND status = :item_status_running
        RETURNING id
    ), restarted AS (
        UPDATE batches b SET dispatch_token = :new_token, heartbeat_at = :now,
            failed_items = b.failed_items + (SELECT count(*) FROM item),
            run_attempts = greatest(b.run_attempts - 1, 0)
        FROM own
        WHERE b.id = own.id
        RETURNING b.id
    ), logged AS (
        INSERT INTO batch_logs (batch_id, at, level, message)
        SELECT own.id, :now, line.level, line.message
        FROM own, {_LINES}
        ORDER BY line.place
    ), released AS (
        SELECT pg_advisory_unlock(:lease_class, :id) FROM (SELECT count(*) FROM own) AS own_first
    )
    SELECT (SELECT count(*) FROM restarted) AS restarted, (SELECT count(*) FROM released) AS released
    """
)
