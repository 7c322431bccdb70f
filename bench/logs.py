"""Log benchmark: GET /batches/<id>/logs pages and the .txt download on a batch with 100,000 lines.

Each API read is timed through the app (token, schema, service, JSON), beside a
baseline measured in the same run: a bare SELECT of the same page on a plain
psycopg connection. Another batch with as many lines shares the table, as it
would in service. Not a test: it prints figures and never fails on them.

    .venv/bin/python -m bench.logs [--lines 100000] [--samples 40]

Uses DATABASE_URL / REDIS_URL when set, else the embedded servers under ./var/.
It works in a database of its own (batchq_bench_logs) and Redis database 10.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import psycopg

from bench.results import record
from bench.setup import bench_environment, insert_profiles, percentile, timed

BENCH_DB = "batchq_bench_logs"
BENCH_REDIS_DB = 10
CHANNEL = "batchq-bench-logs:events"
PER_PAGE = 200

# Of every 1,000 lines: 100 debug, 889 info, 10 warning, 1 error (a log where the filter matters).
FILL = """
INSERT INTO batch_logs (batch_id, at, level, message)
SELECT %(id)s, now(),
    CASE WHEN g %% 1000 = 0 THEN 'error' WHEN g %% 100 = 0 THEN 'warning' WHEN g %% 10 = 1 THEN 'debug' ELSE 'info' END,
    'profile-' || g || ': item ' || g || ' succeeded after a while'
FROM generate_series(1, %(n)s) g ORDER BY g
"""

PAGE = "SELECT id, at, level, message FROM batch_logs WHERE batch_id = %s AND id < %s ORDER BY id DESC LIMIT %s"
PAGE_AT_LEVEL = (
    "SELECT id, at, level, message FROM batch_logs WHERE batch_id = %s AND id < %s AND level = ANY(%s)"
    " ORDER BY id DESC LIMIT %s"
)


def line(label: str, times: list[float]) -> None:
    print(f"  {label:<58} p50 {percentile(times, 0.5):7.2f} ms   p95 {percentile(times, 0.95):7.2f} ms")


def fill(url: str, lines: int) -> tuple[int, int, int]:
    """Two batches of `lines` lines each; return the measured batch, its middle and its last line id."""
    from app import create_app
    from app.extensions import db
    from app.services import queue_manager
    from app.services.queue_manager import NewBatch

    app = create_app()
    with app.app_context():
        # Paused, so the batches stay queued: nothing but this benchmark writes their logs.
        db.session.execute(db.text("UPDATE queue_state SET paused = true, paused_by = 'bench', paused_at = now()"))
        profiles = insert_profiles(1)
        ids = [queue_manager.enqueue(NewBatch(f"logs {i}", "noop", {}, profiles))[0].id for i in range(2)]
        db.session.remove()
    with psycopg.connect(url, autocommit=True) as connection:
        for batch_id in ids:
            connection.execute(FILL, {"id": batch_id, "n": lines})
        connection.execute("VACUUM ANALYZE batch_logs")
        first, last = connection.execute(
            "SELECT min(id), max(id) FROM batch_logs WHERE batch_id = %s", (ids[0],)
        ).fetchone()  # type: ignore[misc]
    return ids[0], (first + last) // 2, last


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=100_000, help="log lines of each of the two batches")
    parser.add_argument("--samples", type=int, default=40, help="timed reads of each kind")
    args = parser.parse_args()

    env = bench_environment(BENCH_DB, BENCH_REDIS_DB, CHANNEL)
    url = env["DATABASE_URL"]
    started = time.perf_counter()
    batch_id, middle, last = fill(url, args.lines)
    print(f"{args.lines:,} lines in each of 2 batches, written in {time.perf_counter() - started:.1f} s")

    from app import create_app
    from app.extensions import db
    from app.services import accounts

    app = create_app()
    with app.app_context():
        token = accounts.create_token("bench")
        db.session.commit()
        db.session.remove()
    client = app.test_client()
    headers = {"Authorization": f"Bearer {token}"}

    def api(query: str) -> Callable[[], Any]:
        def run() -> None:
            response = client.get(f"/api/v1/batches/{batch_id}/logs?per_page={PER_PAGE}&{query}", headers=headers)
            assert response.status_code == 200, response.get_data(as_text=True)

        return run

    with psycopg.connect(url, autocommit=True) as connection:

        def bare(sql: str, *params: Any) -> Callable[[], Any]:
            return lambda: connection.execute(sql, params).fetchall()

        end = last + 1
        warn_up = ["warning", "error"]
        print(f"pages of {PER_PAGE} lines, oldest first (API: with the window's total count)")

        def get_batch() -> None:
            assert client.get(f"/api/v1/batches/{batch_id}", headers=headers).status_code == 200

        line("reference: API GET /batches/<id> (any request's own cost)", timed(get_batch, args.samples))
        count = "SELECT count(*) FROM batch_logs WHERE batch_id = %s AND id < %s"
        line("baseline: bare count of the lines before the end", timed(bare(count, batch_id, last + 1), args.samples))
        line("baseline: bare SELECT of the newest page", timed(bare(PAGE, batch_id, end, PER_PAGE), args.samples))
        line("API ?before=<past the end> (the newest page)", timed(api(f"before={end}"), args.samples))
        middle_page = timed(api(f"before={middle}"), args.samples)
        line("API ?before=<middle line>", middle_page)
        record(
            "logs",
            f"a page of the log from its middle, {args.lines:,} lines, p50",
            percentile(middle_page, 0.5),
            "ms",
            baseline=percentile(timed(get_batch, args.samples), 0.5),
            baseline_measure="GET /batches/<id>",
        )
        line("API ?after=<middle line>", timed(api(f"after={middle}"), args.samples))
        line("API ?after=<last line - 20> (following the tail)", timed(api(f"after={last - 20}"), args.samples))
        line(
            "baseline: bare SELECT level IN (warning, error), newest page",
            timed(bare(PAGE_AT_LEVEL, batch_id, end, warn_up, PER_PAGE), args.samples),
        )
        line("API ?level=warning&before=<past the end>", timed(api(f"level=warning&before={end}"), args.samples))
        line("API ?level=error&before=<middle line>", timed(api(f"level=error&before={middle}"), args.samples))
        line("API ?level=info&before=<past the end>", timed(api(f"level=info&before={end}"), args.samples))

        def download() -> None:
            response = client.get(f"/api/v1/batches/{batch_id}/logs.txt", headers=headers, buffered=False)
            assert sum(chunk.count(b"\n") for chunk in response.iter_encoded()) >= args.lines

        def copy_out() -> None:
            with connection.cursor().copy(
                "COPY (SELECT at, level, message FROM batch_logs WHERE batch_id = %s ORDER BY id) TO STDOUT",
                (batch_id,),
            ) as copy:
                for _ in copy:
                    pass

        print(f"the whole log ({args.lines:,} lines)")
        line("baseline: COPY of the batch's lines to the client", timed(copy_out, 5))
        line("API GET logs.txt, streamed in keyset pages of 5,000", timed(download, 5))


if __name__ == "__main__":
    main()
