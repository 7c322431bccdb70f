"""bench.metrics: a scrape of /metrics with 100,000 batches, beside a bare `SELECT 1`.

Fills a database of its own with `--batches` batches in every status (most of
them ended, as in a long-lived queue, some queued, one running), then times
the gauges' one statement alone, and whole scrapes through the app (the token
check, the host's metrics files, the text format), against a bare `SELECT 1`
on the same kind of connection. Target: a scrape under 50 ms.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import psycopg

from bench.results import record
from bench.setup import bench_environment, percentile, timed

BENCH_DB = "batchq_bench_metrics"
BENCH_REDIS_DB = 9
CHANNEL = "batchq-bench-metrics:events"

# Ended batches in the four terminal statuses, then the queued ones, then one running.
FILL = """
INSERT INTO batches (name, status, queue_rank, processor, parameters, profile_ids, total_items, succeeded_items,
    failed_items, run_attempts, created_at, started_at, finished_at)
SELECT 'bench-' || g,
    CASE WHEN g > %(ended)s THEN 'queued'
        ELSE (ARRAY['done', 'done', 'done', 'failed', 'stopped', 'cancelled'])[1 + g %% 6] END,
    CASE WHEN g > %(ended)s THEN g ELSE NULL END,
    'noop', '{}', '{}', 0, 0, 0, 0, now() - interval '1 day', now() - interval '1 day', now() - interval '1 day'
FROM generate_series(1, %(n)s) AS g
"""


def line(label: str, times: list[float]) -> None:
    print(
        f"  {label:<46} p50 {percentile(times, 0.5):7.2f} ms   p95 {percentile(times, 0.95):7.2f} ms"
        f"   max {max(times):7.2f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=100_000, help="batches in the database")
    parser.add_argument("--queued", type=int, default=1_000, help="of which queued")
    parser.add_argument("--samples", type=int, default=50, help="timed reads of each kind")
    args = parser.parse_args()

    env = bench_environment(BENCH_DB, BENCH_REDIS_DB, CHANNEL)
    url = env["DATABASE_URL"]
    started = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(FILL, {"n": args.batches, "ended": args.batches - args.queued})
        connection.execute(
            "UPDATE batches SET status = 'in_progress', queue_rank = NULL, started_at = now()"
            " WHERE id = (SELECT min(id) FROM batches WHERE status = 'queued')"
        )
        connection.execute("VACUUM ANALYZE batches")
    print(f"{args.batches:,} batches ({args.queued:,} queued) written in {time.perf_counter() - started:.1f} s")

    from app import create_app
    from app.extensions import db
    from app.metrics.gauges import read_gauges
    from app.services import accounts

    app = create_app()
    with app.app_context():
        token = accounts.create_token("bench")
        db.session.commit()
        gauges = read_gauges()
        assert sum(gauges.by_status.values()) == args.batches, gauges
        db.session.remove()
    client = app.test_client()

    def scrape(headers: dict[str, str]) -> Callable[[], None]:
        def run() -> None:
            response = client.get("/metrics", headers=headers)
            assert response.status_code == 200, response.get_data(as_text=True)

        return run

    def in_context(read: Callable[[], Any]) -> Callable[[], None]:
        def run() -> None:
            with app.app_context():
                read()

        return run

    with psycopg.connect(url, autocommit=True) as connection:
        line("bare SELECT 1 (psycopg)", timed(lambda: connection.execute("SELECT 1").fetchall(), args.samples))
    with app.app_context():
        line(
            "bare SELECT 1 (the app's session)",
            timed(in_context(lambda: db.session.execute(db.text("SELECT 1"))), args.samples),
        )
        statement = timed(in_context(read_gauges), args.samples)
        line("the gauges' statement (read_gauges)", statement)
    allowed = timed(scrape({}), args.samples)
    line("GET /metrics from an allowed host", allowed)
    line("GET /metrics with a token", timed(scrape({"Authorization": f"Bearer {token}"}), args.samples))
    print("target: a scrape under 50 ms")
    p50 = percentile(allowed, 0.5)
    record(
        "metrics",
        f"GET /metrics, {args.batches:,} batches, p50",
        p50,
        "ms",
        baseline=percentile(statement, 0.5),
        baseline_measure="the gauges' statement alone",
        target="< 50 ms",
        met=p50 < 50,
    )


if __name__ == "__main__":
    main()
