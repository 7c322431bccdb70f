"""Why a batch waits, and when it should start: the `waiting_*` and `estimated_start_at` of every batch.

One QueueView is read per answer, in the answer's own snapshot (see
app/services/snapshots.py): the service's health, the queue's pause, the
running batch and whether its run holds its lease, and how long an item of
each processor recently took. Every batch of the answer is judged against it,
so a page and its banner never disagree.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from flask import current_app, g
from sqlalchemy import text

from app import processors
from app.extensions import db
from app.models import Batch, BatchStatus
from app.models._types import utcnow
from app.models.queue_state import QUEUE_STATE_ID
from app.services import health as health_of
from app.services import leases, liveness
from app.services.health import ServiceHealth, read_health

# Finished batches per processor that the item-duration estimate averages over.
RECENT_BATCHES = 20


class WaitingCode(StrEnum):
    BEHIND = "behind"
    PAUSED = "paused"
    DRAINING = "draining"
    NO_WORKER = "no_worker"
    BROKER = "broker"
    RECOVERING = "recovering"
    STARTING = "starting"


@dataclass(frozen=True)
class Waiting:
    """What holds one batch back (nothing: all None) and when it should start."""

    code: WaitingCode | None = None
    reason: str | None = None
    estimated_start_at: datetime | None = None


NOTHING = Waiting()


@dataclass(frozen=True)
class RunningRun:
    """The running batch, as far as its waiting reason and the queue's estimates need it."""

    id: int
    status: str
    run_attempts: int
    lease_held: bool
    lost_at: datetime | None
    heartbeat_at: datetime | None
    seconds_left: float | None  # its pending items times a recent item's duration


@dataclass
class QueueView:
    """Everything the waiting reasons of one answer are judged against."""

    health: ServiceHealth
    paused: bool
    paused_by: str | None
    paused_at: datetime | None
    head_id: int | None
    drain_by: str | None  # who asked for a drain, while one is asked for
    running: RunningRun | None
    seconds_per_item: dict[str, float]
    max_attempts: int
    now: datetime = field(default_factory=utcnow)
    judged: dict[int, Waiting] = field(default_factory=dict)

    def outage(self) -> tuple[WaitingCode, str] | None:
        """A fault of the service itself, which holds back every batch that waits."""
        if not self.health.broker:
            return WaitingCode.BROKER, "the broker is unreachable"
        if not self.health.workers:
            return WaitingCode.NO_WORKER, "no worker is running"
        return None


# How long an item of each processor took lately: the wall time of its last
# finished batches over the items they ran, handoffs included.
_SECONDS_PER_ITEM = text(
    """
    SELECT p.name, sum(extract(epoch FROM r.finished_at - r.started_at)) / sum(r.items) AS seconds
    FROM unnest(CAST(:processors AS text[])) AS p(name)
    CROSS JOIN LATERAL (
        SELECT started_at, finished_at, succeeded_items + failed_items AS items FROM batches
        WHERE processor = p.name AND status IN ('done', 'failed') AND started_at IS NOT NULL
            AND finished_at IS NOT NULL AND succeeded_items + failed_items > 0
        ORDER BY finished_at DESC LIMIT :recent
    ) r
    GROUP BY p.name
    """
)

# The queue's state, its head, the running batch (and whether its run holds its
# lease), whether repairs are late and each processor's recent pace, in one
# round trip. now() is the transaction's start: the moment of the answer's
# snapshot, which the running batch's progress is measured against.
_QUEUE = text(
    f"""
    SELECT now() AS now, q.paused, q.paused_by, q.paused_at, CASE WHEN q.draining THEN q.drain_by END AS drain_by,
        coalesce(q.repaired_at < now() - make_interval(secs => :late), false) AS repairs_late,
        (SELECT id FROM batches WHERE queue_rank IS NOT NULL ORDER BY queue_rank LIMIT 1) AS head_id,
        (SELECT json_object_agg(rate.name, rate.seconds) FROM ({_SECONDS_PER_ITEM.text}) AS rate) AS rates,
        {liveness.ALIVE_JSON} AS processes,
        r.id AS running_id, r.status AS running_status, r.run_attempts, r.lost_at, r.heartbeat_at, r.started_at,
        r.processor, r.total_items - r.succeeded_items - r.failed_items AS pending,
        r.succeeded_items + r.failed_items AS done,
        CASE WHEN r.id IS NOT NULL THEN {leases.held_sql("r.id")} END AS lease_held
    FROM (SELECT 1) AS one
    LEFT JOIN queue_state q ON q.id = :id
    LEFT JOIN LATERAL (SELECT * FROM batches WHERE status IN ('in_progress', 'stopping')) AS r ON true
    """
)

# The work queued ahead of a rank, by processor: the estimate of the first queued batch of a page.
_WORK_AHEAD = text(
    """
    SELECT processor, sum(total_items - succeeded_items - failed_items) AS items
    FROM batches WHERE queue_rank < :rank
    GROUP BY processor
    """
)


def queue_view() -> QueueView:
    """This answer's view of the queue, read once (kept on flask.g for the rest of the request)."""
    view: QueueView | None = g.get("queue_view")
    if view is None:
        view = g.queue_view = _read_view()
    return view


def _read_view() -> QueueView:
    parameters = {
        "id": QUEUE_STATE_ID,
        "late": health_of.late_seconds(),
        "processors": processors.names(),
        "recent": RECENT_BATCHES,
        "lease_class": leases.LEASE_CLASS,
        "stale": liveness.stale_seconds(),
    }
    try:
        queue = db.session.execute(_QUEUE, parameters).one()
    except Exception:  # noqa: BLE001  (the database is unreachable: read_health says so)
        db.session.rollback()
        return _view_without_database()
    rates = {name: float(seconds) for name, seconds in (queue.rates or {}).items()}
    return QueueView(
        now=queue.now,
        health=health_of.health_from(liveness.alive_from_json(queue.processes), bool(queue.repairs_late)),
        paused=bool(queue.paused),
        paused_by=queue.paused_by,
        paused_at=queue.paused_at,
        head_id=queue.head_id,
        drain_by=queue.drain_by,
        running=_running_run(queue, rates) if queue.running_id is not None else None,
        seconds_per_item=rates,
        max_attempts=int(current_app.config["BATCH_MAX_RUN_ATTEMPTS"]),
    )


def _view_without_database() -> QueueView:
    return QueueView(
        health=read_health(),
        paused=False,
        paused_by=None,
        paused_at=None,
        head_id=None,
        drain_by=None,
        running=None,
        seconds_per_item={},
        max_attempts=int(current_app.config["BATCH_MAX_RUN_ATTEMPTS"]),
    )


# Items a running batch must have done before its own pace is trusted over its processor's history.
OWN_PACE_AFTER = 5


def _running_run(row: Any, rates: dict[str, float]) -> RunningRun:
    """The running batch from the view's row: its columns are the statement's running_* and the rest."""
    done = row.done
    rate = rates.get(row.processor)
    own_pace = done and row.started_at is not None and (done >= OWN_PACE_AFTER or rate is None)
    if own_pace and row.started_at is not None:  # the freshest evidence, once there is enough of it
        rate = (row.now - row.started_at).total_seconds() / done
    return RunningRun(
        id=row.running_id,
        status=row.running_status,
        run_attempts=row.run_attempts,
        lease_held=bool(row.lease_held),
        lost_at=row.lost_at,
        heartbeat_at=row.heartbeat_at,
        seconds_left=row.pending * rate if rate is not None else None,
    )


def waiting_of(batch: Batch) -> Waiting:
    """The batch's waiting reason and estimate, judged against this answer's view."""
    view = queue_view()
    if batch.id not in view.judged:
        if batch.status == BatchStatus.QUEUED:
            judge_queued([batch])
        else:
            view.judged[batch.id] = _judge_running(view) if batch.id == _running_id(view) else NOTHING
    return view.judged[batch.id]


def judge_queued(batches: Iterable[Batch]) -> None:
    """Judge queued batches in one go: the work ahead of the first is summed once, then carried along."""
    view = queue_view()
    queued = sorted((b for b in batches if b.status == BatchStatus.QUEUED), key=lambda b: b.queue_rank or 0)
    if not queued:
        return
    # Held back by an outage or a pause, a batch gets no estimate: the work ahead need not be summed.
    held = view.outage() is not None or view.paused
    ahead = None if held else _seconds_ahead(view, queued[0].queue_rank or 0)
    for batch in queued:
        position = batch.queue_position or 1
        view.judged[batch.id] = _judge_queued(view, batch, position, ahead)
        rate = view.seconds_per_item.get(batch.processor)
        ahead = ahead + batch.pending_items * rate if ahead is not None and rate is not None else None


def _seconds_ahead(view: QueueView, rank: int) -> float | None:
    """Seconds of work before a batch of this rank starts: the running batch's rest and the queue ahead."""
    total = 0.0
    if view.running is not None:
        if view.running.seconds_left is None:
            return None
        total = view.running.seconds_left
    for row in db.session.execute(_WORK_AHEAD, {"rank": rank}):
        rate = view.seconds_per_item.get(row.processor)
        if rate is None:
            return None
        total += int(row.items) * rate
    return total


def _judge_queued(view: QueueView, batch: Batch, position: int, ahead: float | None) -> Waiting:
    outage = view.outage()
    if outage is not None:
        return Waiting(*outage)
    if view.paused:
        return Waiting(WaitingCode.PAUSED, _paused_reason(view))
    estimate = view.now + timedelta(seconds=ahead) if ahead is not None else None
    if view.running is not None and view.drain_by is not None:
        return Waiting(
            WaitingCode.DRAINING, f"the queue pauses after batch {view.running.id} (drain asked by {view.drain_by})"
        )
    if view.running is not None:
        what = "#1 starts next" if position == 1 else f"{position - 1} queued ahead"
        return Waiting(WaitingCode.BEHIND, f"waiting for batch {view.running.id} ({what})", estimate)
    if batch.id == view.head_id:
        return Waiting(WaitingCode.STARTING, "starting", view.now)
    return Waiting(WaitingCode.BEHIND, f"waiting for batch {view.head_id} (#1) to start", estimate)


def _judge_running(view: QueueView) -> Waiting:
    """A running batch waits only while no process works on it: its run holds no lease."""
    run = view.running
    if run is None or run.lease_held or run.status != BatchStatus.IN_PROGRESS:
        return NOTHING
    outage = view.outage()
    if outage is not None:
        return Waiting(*outage)
    if run.run_attempts == 0:
        return Waiting(WaitingCode.STARTING, "starting")
    attempt = f"attempt {run.run_attempts + 1} of {view.max_attempts}"
    if run.lost_at is not None:
        return Waiting(WaitingCode.RECOVERING, f"run lost at {_clock(run.lost_at)}; retrying ({attempt})")
    since = f" since {_clock(run.heartbeat_at)}" if run.heartbeat_at else ""
    return Waiting(WaitingCode.RECOVERING, f"run interrupted{since}; waiting to resume ({attempt})")


def _running_id(view: QueueView) -> int | None:
    return view.running.id if view.running is not None else None


def _paused_reason(view: QueueView) -> str:
    reason = f"queue paused by {view.paused_by or 'someone'}"
    return reason + (f" at {_clock(view.paused_at)}" if view.paused_at else "")


def _clock(at: datetime | None) -> str:
    return at.strftime("%H:%M UTC") if at is not None else "?"
