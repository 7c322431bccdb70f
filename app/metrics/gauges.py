"""The gauges, read from the database at scrape time in one statement: one snapshot, the same on every host.

Nothing here is kept in a process: the queue's state is the database's, so a
scrape of any web process (of any host) says the same, and a restart loses
nothing. Workers alive and beat's last heartbeat come from the heartbeats they
record (app/services/liveness.py), never a broadcast.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import text

from app.extensions import db
from app.models import BatchStatus
from app.models.batches import RUNNING_SLOT
from app.models.processes import BEAT, WORKER
from app.models.queue_state import QUEUE_STATE_ID
from app.services.liveness import HEARTBEAT_SECONDS, MISSED_BEATS
from app.services.status_counts import COUNTS_BY_STATUS

# One statement, so every gauge comes from one snapshot. The counts by status
# are the database's own, kept as batches change (app/services/status_counts.py):
# a few rows, at any number of batches; the rest reads one row each.
_SNAPSHOT = text(
    f"""
    SELECT
        (SELECT coalesce(json_object_agg(status, n), '{{}}') FROM (
            {COUNTS_BY_STATUS}
        ) AS counted) AS by_status,
        (SELECT paused FROM queue_state WHERE id = :queue_id) AS paused,
        (SELECT extract(epoch FROM now() - started_at) FROM batches
         WHERE {RUNNING_SLOT}) AS running_age,
        (SELECT count(*) FROM service_processes
         WHERE kind = :worker AND last_seen_at > now() - make_interval(secs => :stale)) AS workers_alive,
        (SELECT extract(epoch FROM now() - max(last_seen_at)) FROM service_processes
         WHERE kind = :beat) AS beat_last_seen
    """
)


@dataclass(frozen=True)
class QueueGauges:
    """The gauges' values, as one statement read them."""

    by_status: dict[str, int] = field(default_factory=dict)
    paused: bool = False
    running_age: float | None = None
    workers_alive: int = 0
    beat_last_seen: float | None = None

    @property
    def queue_length(self) -> int:
        return self.by_status.get(BatchStatus.QUEUED.value, 0)


def read_gauges() -> QueueGauges:
    """Read every gauge in one statement (in the caller's app context)."""
    row = db.session.execute(
        _SNAPSHOT,
        {
            "queue_id": QUEUE_STATE_ID,
            "worker": WORKER,
            "beat": BEAT,
            "stale": MISSED_BEATS * HEARTBEAT_SECONDS,
        },
    ).one()
    db.session.rollback()  # a read: end the transaction, give the connection back
    return QueueGauges(
        by_status={status: int(count) for status, count in (row.by_status or {}).items()},
        paused=bool(row.paused),
        running_age=None if row.running_age is None else float(row.running_age),
        workers_alive=int(row.workers_alive),
        beat_last_seen=None if row.beat_last_seen is None else float(row.beat_last_seen),
    )


class DatabaseGauges(Collector):
    """A collector that reads the gauges when scraped."""

    def __init__(self, gauges: QueueGauges | None = None) -> None:
        self.gauges = gauges

    def collect(self) -> Iterator[GaugeMetricFamily]:
        values = self.gauges if self.gauges is not None else read_gauges()
        batches = GaugeMetricFamily("batchq_batches", "Batches in each status", labels=["status"])
        for status in BatchStatus:  # every status, 0 included: a series that vanishes breaks rate() and alerts
            batches.add_metric([status.value], values.by_status.get(status.value, 0))
        yield batches
        yield GaugeMetricFamily("batchq_queue_length", "Batches waiting in the queue", value=values.queue_length)
        yield GaugeMetricFamily("batchq_queue_paused", "1 while the queue is paused", value=int(values.paused))
        # 0 when nothing runs, so the series stays and "how old is the running batch" has an answer.
        yield GaugeMetricFamily(
            "batchq_running_batch_age_seconds",
            "Seconds since the running batch started (0: none runs)",
            value=values.running_age or 0.0,
        )
        yield GaugeMetricFamily("batchq_workers_alive", "Workers whose heartbeat is recent", value=values.workers_alive)
        if values.beat_last_seen is not None:  # no beat ever recorded (or it left gracefully): no sample
            yield GaugeMetricFamily(
                "batchq_beat_last_seen_seconds", "Seconds since beat's last heartbeat", value=values.beat_last_seen
            )
