"""Items benchmark: how many `noop` items one batch runs per second, beside one Celery task per item.

One `noop` batch of N profiles runs end to end on a real prefork worker (the
Procfile's command); its rate is counted from the batch's started_at to its
finished_at, and from its items' own first start to last end. Beside it, in the
same run and on the same worker: N no-op Celery tasks sent as a plain Celery
user would (a loop of send_task, then wait until the worker has run them all),
the one-task-per-item baseline. Then the stops: a stop committed in the middle
of a running batch, measured to the batch `stopped` and to the batch's last item
activity; no item may start after the stop was committed (the benchmark fails
if one did). Not a test: it prints figures and never fails on them.

    .venv/bin/python -m bench.items [--items 10000] [--stops 5]

Uses DATABASE_URL / REDIS_URL when set, else the embedded servers under ./var/.
It works in a database of its own (batchq_bench_items) and Redis database 7.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass
from datetime import datetime

from bench import processes
from bench.handoff import wait_for_worker
from bench.results import record
from bench.setup import bench_environment, insert_profiles

BENCH_DB = "batchq_bench_items"
BENCH_REDIS_DB = 7
TARGET_RATE = 2000.0  # items/s
TARGET_RATIO = 2.0  # times the one-task-per-item baseline
TARGET_STOP_MS = 1000.0


@dataclass
class BatchRun:
    rate: float  # items/s, batch started_at -> finished_at
    items_rate: float  # items/s, first item start -> last item end
    seconds: float


@dataclass
class Stop:
    to_stopped_ms: float  # the stop (stamped as it locks the batch, before its commit) -> the batch stopped
    to_last_item_ms: float  # the stop -> the batch's last item activity
    done_before: int  # items finished when the batch stopped
    started_after: int  # items whose start is later than the stop's stamp: must be 0


def measure_baseline(env: dict[str, str], count: int) -> float:
    """N no-op tasks, sent one by one, then waited for: tasks/s from the first send to the worker's count."""
    from celery import Celery

    sender = Celery(broker=env["REDIS_URL"])
    before = _tasks_done(sender)
    started = time.monotonic()
    for _ in range(count):
        sender.send_task("bench.noop", queue="control", ignore_result=True)
    deadline = started + 600
    while _tasks_done(sender) < before + count:
        if time.monotonic() > deadline:
            raise RuntimeError("the baseline's tasks did not all run within 600 s")
        time.sleep(0.1)
    return count / (time.monotonic() - started)


def _tasks_done(sender: object) -> int:
    """How many bench.noop tasks the worker has run (its own count, which costs the tasks nothing)."""
    stats = sender.control.inspect(timeout=0.25).stats() or {}  # type: ignore[attr-defined]
    return sum(int(node.get("total", {}).get("bench.noop", 0)) for node in stats.values())


def run_batch(count: int, profile_ids: list[int], name: str) -> int:
    """Queue one noop batch of `count` profiles while paused, then Start it; return its id."""
    from app.extensions import db
    from app.services import queue_manager
    from app.services.queue_manager import NewBatch

    db.session.execute(db.text("UPDATE queue_state SET paused = true"))
    db.session.commit()
    batch, _ = queue_manager.enqueue(
        NewBatch(name=name, processor="noop", parameters={}, profile_ids=profile_ids[:count])
    )
    queue_manager.start("bench")
    return batch.id


def wait_finished(batch_id: int, timeout: float) -> str:
    from app.extensions import db

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = db.session.execute(
            db.text("SELECT status, finished_at FROM batches WHERE id = :id"), {"id": batch_id}
        ).one()
        db.session.rollback()
        if row.finished_at is not None:
            return str(row.status)
        time.sleep(0.02)
    raise RuntimeError(f"batch {batch_id} did not finish within {timeout:g} s")


def measure_batch(count: int, profile_ids: list[int]) -> BatchRun:
    from app.extensions import db

    batch_id = run_batch(count, profile_ids, "bench-items")
    status = wait_finished(batch_id, timeout=max(120.0, count / 20))
    if status != "done":
        raise RuntimeError(f"the items batch ended {status}, not done")
    row = db.session.execute(
        db.text(
            "SELECT b.started_at, b.finished_at, min(i.started_at) AS first_start, max(i.finished_at) AS last_end,"
            " count(*) FILTER (WHERE i.status = 'succeeded') AS succeeded"
            " FROM batches b JOIN batch_items i ON i.batch_id = b.id WHERE b.id = :id GROUP BY b.id"
        ),
        {"id": batch_id},
    ).one()
    db.session.rollback()
    if row.succeeded != count:
        raise RuntimeError(f"{row.succeeded} of {count} items succeeded")
    seconds = (row.finished_at - row.started_at).total_seconds()
    return BatchRun(count / seconds, count / (row.last_end - row.first_start).total_seconds(), seconds)


def measure_stop(count: int, profile_ids: list[int], round_: int) -> Stop:
    """Start a batch, stop it once a quarter of its items (at most 2,000) are done, and time the stop."""
    from app.extensions import db
    from app.services import queue_manager

    batch_id = run_batch(count, profile_ids, f"bench-stop-{round_}")
    wanted, deadline = min(count // 4, 2000), time.monotonic() + 120
    while time.monotonic() < deadline:
        done = db.session.execute(
            db.text("SELECT succeeded_items FROM batches WHERE id = :id"), {"id": batch_id}
        ).scalar_one()
        db.session.rollback()
        if done >= wanted:
            break
        time.sleep(0.005)
    # Timed from the stop's own stamp, taken under the batch's row lock before its commit: an item start
    # ordered before the stop is stamped earlier, so any item started later broke the rule.
    stop_at = queue_manager.stop(batch_id, "bench").stop_requested_at
    status = wait_finished(batch_id, timeout=30)
    if status != "stopped":
        raise RuntimeError(f"the stopped batch ended {status}")
    row = db.session.execute(
        db.text(
            "SELECT b.finished_at, b.succeeded_items,"
            " max(greatest(i.started_at, i.finished_at)) AS last_activity,"
            " count(*) FILTER (WHERE i.started_at > :stop_at) AS started_after"
            " FROM batches b JOIN batch_items i ON i.batch_id = b.id WHERE b.id = :id GROUP BY b.id"
        ),
        {"id": batch_id, "stop_at": stop_at},
    ).one()
    db.session.rollback()
    return Stop(
        _ms(row.finished_at, stop_at),
        _ms(row.last_activity or row.finished_at, stop_at),
        row.succeeded_items,
        row.started_after,
    )


def _ms(later: datetime, earlier: datetime) -> float:
    return (later - earlier).total_seconds() * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=10000, help="profiles in the batch, and baseline tasks")
    parser.add_argument("--stops", type=int, default=5, help="batches stopped mid-way, one after the other")
    args = parser.parse_args()

    env = bench_environment(BENCH_DB, BENCH_REDIS_DB, "batchq-bench-items:events")
    from app import create_app

    app = create_app()
    worker = processes.start_worker(
        env, "--include=bench.baseline", "--without-mingle", "--without-gossip", loglevel="WARNING"
    )
    try:
        wait_for_worker(env)
        with app.app_context():
            from app.extensions import db

            profile_ids = insert_profiles(args.items)
            db.session.commit()
            baseline = measure_baseline(env, args.items)
            batch = measure_batch(args.items, profile_ids)
            stops = [measure_stop(args.items, profile_ids, round_) for round_ in range(args.stops)]
    finally:
        processes.stop(worker)

    ratio = batch.rate / baseline
    print(f"baseline (one no-op Celery task per item, same worker): {baseline:8.0f} tasks/s")
    print(
        f"items of one noop batch: {batch.rate:8.0f} items/s batch start -> end"
        f" ({args.items} in {batch.seconds:.2f} s), {batch.items_rate:.0f} items/s first item -> last"
    )
    print(f"items/s / baseline: {ratio:.2f}x   targets: >= {TARGET_RATE:,.0f}/s and >= {TARGET_RATIO:g}x the baseline")
    record(
        "items",
        "noop items/s in one batch",
        batch.rate,
        "items/s",
        better="higher",
        baseline=baseline,
        baseline_measure="one no-op Celery task per item",
        target=f">= {TARGET_RATE:,.0f}/s",
        met=batch.rate >= TARGET_RATE,
    )
    record(
        "items",
        "items/s over the one-task-per-item baseline",
        ratio,
        "x",
        better="higher",
        target=f">= {TARGET_RATIO:g}x baseline",
        met=ratio >= TARGET_RATIO,
    )
    if stops:
        to_stopped = [stop.to_stopped_ms for stop in stops]
        to_last = [stop.to_last_item_ms for stop in stops]
        started_after = sum(stop.started_after for stop in stops)
        print(
            f"stop -> batch stopped: median {statistics.median(to_stopped):.1f} ms, max {max(to_stopped):.1f} ms;"
            f" stop -> last item activity: max {max(to_last):.1f} ms"
            f"   ({len(stops)} stops, target < {TARGET_STOP_MS:g} ms)"
        )
        print(f"items started after the stop (its stamp, before its commit): {started_after} (must be 0)")
        record(
            "items",
            "stop -> batch stopped, max",
            max(to_stopped),
            "ms",
            target=f"< {TARGET_STOP_MS:,.0f} ms",
            met=max(to_stopped) < TARGET_STOP_MS,
        )
        record("items", "items started after a stop", started_after, "items", target="0", met=started_after == 0)
        if started_after:
            sys.exit(f"{started_after} items started after their batch's stop was committed")


if __name__ == "__main__":
    main()
