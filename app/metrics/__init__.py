"""The service's Prometheus metrics: where the values live, and every metric a process produces.

Multiprocess mode (prometheus_client): every process of a host (gunicorn's
workers, Celery's main process and pool children, beat) writes its counters
and histograms into files of its own in one directory, METRICS_DIR, and the
web's /metrics adds them up at scrape time (app/metrics/view.py). The mode is
chosen when prometheus_client is first imported, from PROMETHEUS_MULTIPROC_DIR,
so this module sets it before importing the library; `app` imports this module
first, and nothing imports prometheus_client but through it.

The gauges (batches by status, the queue, workers alive) are not here: they are
read from the database at scrape time (app/metrics/gauges.py), so they are the
same whichever process or host answers. Why this design: docs/observability.md.
"""

from __future__ import annotations

import os

from app.config import metrics_dir

METRICS_DIR = metrics_dir()
METRICS_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(METRICS_DIR)

from prometheus_client import Counter, Histogram  # noqa: E402  (after the directory is set)

# Item durations: a noop item takes milliseconds, a real one minutes to an hour.
ITEM_BUCKETS = (0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600)
# The handoff is milliseconds when all is well; the alert is at a p99 of a second.
HANDOFF_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
# Time in the queue: from no wait at all to a day.
QUEUED_BUCKETS = (0.01, 0.1, 1, 10, 60, 300, 900, 3600, 4 * 3600, 12 * 3600, 86400)
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

ITEMS = Counter("batchq_items", "Items whose outcome was recorded", ["processor", "outcome"])
ITEM_DURATION = Histogram(
    "batchq_item_duration_seconds", "Seconds an item's processor took", ["processor"], buckets=ITEM_BUCKETS
)
HANDOFF = Histogram(
    "batchq_handoff_seconds",
    "Seconds from a batch's end to the start of the one waiting behind it",
    buckets=HANDOFF_BUCKETS,
)
TIME_QUEUED = Histogram(
    "batchq_time_queued_seconds",
    "Seconds from a batch's creation to its start (a resumed batch's earlier life included)",
    buckets=QUEUED_BUCKETS,
)
REPAIRS = Counter("batchq_repairs", "Repairs made by the reconciler and the recovery of failed runs", ["kind"])
PURGED_BATCHES = Counter("batchq_purged_batches", "Finished batches deleted by the retention purge")
HTTP_REQUESTS = Counter("batchq_http_requests", "HTTP requests answered", ["method", "route", "status"])
HTTP_DURATION = Histogram(
    "batchq_http_request_duration_seconds",
    "Seconds from a request's start to its response (a stream: to its opening)",
    ["method", "route", "status"],
    buckets=HTTP_BUCKETS,
)


def record_item(processor: str, outcome: str, seconds: float) -> None:
    """Count an item's recorded outcome (`succeeded`, `failed`, or `interrupted` by a stop) and its duration."""
    ITEMS.labels(processor, outcome).inc()
    ITEM_DURATION.labels(processor).observe(seconds)


def record_repair(kind: str) -> None:
    """Count one repair: a lost run sent again or ended, a stalled run restarted, a lost promotion made, ..."""
    REPAIRS.labels(kind).inc()


def record_purge(batches: int) -> None:
    """Count finished batches a purge deleted (after the chunk that deleted them commits)."""
    PURGED_BATCHES.inc(batches)
