"""bench.retention: how fast the retention purge deletes, and what it costs the queue while it runs.

Fills a database of its own with --batches batches finished 100 days ago (the four terminal statuses),
each with --items items and --logs log lines, plus --young batches finished yesterday that must stay,
written by INSERT ... SELECT generate_series with triggers off (session_replication_role), then vacuumed.
The queue is paused, so an enqueued batch only waits: no worker is needed.

1. Baseline: --samples enqueues (queue_manager.enqueue, the queue lock and one new batch with its items,
   as POST /batches pays it) with nothing else running.
2. The purge (app/services/retention.py, --chunk batches a transaction) in a thread, and enqueues in the
   main thread for as long as it runs: their latency beside the purge, against the baseline.

Prints the purge's rate (batches/s, rows/s), each chunk's time (how long its row locks are held) and the two
enqueue latencies. Never fails on a figure; fails if the purge left an old batch, took a young or a queued
one, or an enqueue failed.
"""

from __future__ import annotations

import argparse
import threading
import time
from datetime import timedelta

import psycopg

from app.services.status_counts import RECOUNT
from bench.results import record
from bench.setup import bench_environment, percentile

BENCH_DB = "batchq_bench_retention"
BENCH_REDIS_DB = 8
CHANNEL = "batchq-bench-retention:events"
PROFILES = 100

# Triggers off while seeding (the log lines' commit-order trigger, the foreign keys' checks): rows written
# straight and consistent, as a long-lived database would hold them, in seconds rather than minutes.
FILL = """
SET session_replication_role = replica;
INSERT INTO profiles (name, attributes, created_at)
    SELECT 'bench-' || g, '{}', now() FROM generate_series(1, %(profiles)s) AS g;
INSERT INTO batches (name, status, processor, parameters, profile_ids, total_items, succeeded_items, failed_items,
    run_attempts, created_at, started_at, finished_at)
SELECT 'bench-' || g,
    CASE WHEN g > %(old)s THEN 'done'
        ELSE (ARRAY['done', 'done', 'done', 'failed', 'stopped', 'cancelled'])[1 + g %% 6] END,
    'noop', '{}', '{}', %(items)s, %(items)s, 0, 1,
    f - interval '1 minute', f - interval '1 minute', f
FROM generate_series(1, %(total)s) AS g,
    LATERAL (SELECT CASE WHEN g > %(old)s THEN now() - interval '1 day'
                         ELSE now() - interval '100 days' - g * interval '1 second' END AS f) AS t;
INSERT INTO batch_items (batch_id, position, profile_id, status, attempts, started_at, finished_at)
    SELECT b.id, i, 1 + (b.id + i) %% %(profiles)s, 'succeeded', 1, b.started_at, b.finished_at
    FROM batches b, generate_series(1, %(items)s) AS i;
INSERT INTO batch_logs (batch_id, at, level, message)
    SELECT b.id, b.finished_at, 'info', 'item ' || i || ' done' FROM batches b, generate_series(1, %(logs)s) AS i
    ORDER BY b.id, i;
SET session_replication_role = DEFAULT;
UPDATE queue_state SET paused = true, paused_by = 'bench', paused_at = now();
"""


def line(label: str, times: list[float]) -> None:
    print(
        f"  {label:<44} n {len(times):5d}   p50 {percentile(times, 0.5):7.2f} ms"
        f"   p99 {percentile(times, 0.99):7.2f} ms   max {max(times):7.2f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=100_000, help="old finished batches to purge")
    parser.add_argument("--young", type=int, default=1_000, help="recently finished batches that stay")
    parser.add_argument("--items", type=int, default=5, help="items per batch")
    parser.add_argument("--logs", type=int, default=10, help="log lines per batch")
    parser.add_argument("--chunk", type=int, default=1_000, help="batches per purge transaction")
    parser.add_argument("--samples", type=int, default=200, help="enqueues timed for the baseline")
    args = parser.parse_args()

    env = bench_environment(BENCH_DB, BENCH_REDIS_DB, CHANNEL)
    url = env["DATABASE_URL"]
    started = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as connection:
        sizes = {
            "profiles": PROFILES,
            "old": args.batches,
            "total": args.batches + args.young,
            "items": args.items,
            "logs": args.logs,
        }
        for statement in filter(str.strip, FILL.split(";\n")):
            connection.execute(statement, sizes if "%(" in statement else None)
        for statement in RECOUNT.split(";\n"):  # the triggers were off: the status counts saw none of it
            connection.execute(statement)
        connection.execute("VACUUM ANALYZE")
    rows = (args.batches + args.young) * (1 + args.items + args.logs)
    print(
        f"{args.batches:,} old batches and {args.young:,} young ones, {rows:,} rows with their items and logs,"
        f" written in {time.perf_counter() - started:.1f} s"
    )

    from app import create_app
    from app.extensions import db
    from app.services import queue_manager, retention
    from app.services.queue_manager import NewBatch
    from app.services.retention import PurgeResult

    app = create_app()
    profile_ids = list(range(1, 4))
    enqueued: list[int] = []

    def enqueue() -> float:
        begun = time.perf_counter()
        batch, _ = queue_manager.enqueue(NewBatch("bench", "noop", {}, profile_ids, created_by="bench"))
        enqueued.append(batch.id)
        db.session.remove()
        return (time.perf_counter() - begun) * 1000

    with app.app_context():
        enqueue()  # warm the connection and the statements
        baseline = [enqueue() for _ in range(args.samples)]

    chunk_times: list[float] = []
    outcome: list[PurgeResult | BaseException] = []
    last = [time.perf_counter()]

    def heard(total: PurgeResult) -> None:
        now = time.perf_counter()
        chunk_times.append((now - last[0]) * 1000)
        last[0] = now

    def run_purge() -> None:
        with app.app_context():
            try:
                last[0] = time.perf_counter()
                outcome.append(retention.purge(retention.cutoff(timedelta(days=90)), chunk=args.chunk, on_chunk=heard))
            except BaseException as exc:  # noqa: BLE001  (reported below)
                outcome.append(exc)
            finally:
                db.session.remove()

    purge = threading.Thread(target=run_purge, name="purge")
    beside: list[float] = []
    with app.app_context():
        purge.start()
        while purge.is_alive():
            beside.append(enqueue())
    purge.join()
    result = outcome[0]
    if isinstance(result, BaseException):
        raise result

    rows_deleted = result.batches + result.items + result.logs + result.webhook_attempts
    print(
        f"purge: {result.batches:,} batches, {result.items:,} items, {result.logs:,} log lines in {result.chunks:,}"
        f" chunks of {args.chunk:,}, {result.seconds:.2f} s: {result.batches / result.seconds:,.0f} batches/s,"
        f" {rows_deleted / result.seconds:,.0f} rows/s"
    )
    line("one chunk's transaction (its locks held)", chunk_times)
    line("baseline: enqueue alone", baseline)
    line("enqueue while the purge runs", beside)
    record(
        "retention",
        f"purge of {result.batches:,} batches",
        result.batches / result.seconds,
        "batches/s",
        better="higher",
    )
    record(
        "retention",
        "enqueue while the purge runs, p99",
        percentile(beside, 0.99),
        "ms",
        baseline=percentile(baseline, 0.99),
        baseline_measure="enqueue alone, p99",
    )

    with app.app_context():
        left = dict(
            db.session.execute(
                db.text(
                    "SELECT (finished_at < now() - interval '90 days') AS old, count(*) FROM batches"
                    " WHERE status <> 'queued' GROUP BY 1"
                )
            ).all()
        )
        queued = db.session.execute(db.text("SELECT count(*) FROM batches WHERE status = 'queued'")).scalar_one()
        db.session.remove()
    problems = []
    if left.get(True):
        problems.append(f"{left[True]} old batches left")
    if left.get(False, 0) != args.young:
        problems.append(f"{left.get(False, 0)} young batches left of {args.young}")
    if queued != len(enqueued):
        problems.append(f"{queued} queued batches left of {len(enqueued)} enqueued")
    if result.batches != args.batches:
        problems.append(f"the purge deleted {result.batches} batches, not {args.batches}")
    if problems:
        raise SystemExit("retention: " + "; ".join(problems))


if __name__ == "__main__":
    main()
