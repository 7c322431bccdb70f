"""Queue-control benchmark: how fast a stop takes hold, and what a move or cancel costs in a long queue.

Not a test: it prints figures and never fails on them.

1. Stop, with a real prefork worker (the Procfile's command, as bench.handoff
   starts it). Each of --iterations rounds enqueues a batch of 6 profiles with
   the `sleep` processor (0.5 s each) and starts the queue; once the batch's 2nd
   item is running, it waits a random 0 to 0.2 s (one period of the run's
   watcher, which looks for a stop every 0.2 s) and calls queue_manager.stop().
   Without that pause every stop would land at the same phase of the watcher's
   polls (the items' 0.5 s fix it), and the max would hide the slowest case.
   The stop request time T is the wall-clock moment the stop's transaction
   committed (a Session after_commit hook): before it the worker can't see the
   stop. Measured from T:

   - stop -> item interrupted: the `at` of the run's "interrupted by the stop"
     log line, written with the interrupted item's outcome (that item goes back
     to pending with no timestamps, so it leaves no trace in batch_items);
   - stop -> batch stopped: the batch's finished_at, written as it turns `stopped`;
   - stop -> last item activity: the latest started_at or finished_at of any of
     the batch's items that is later than T, or 0 when none is (no item began
     or ended after the stop);
   - the stop() call itself, commit included, as the API pays it.

   Timestamps are written by the worker's clock and T by this process's, on
   the same machine. Between rounds the queue stays paused (stop pauses it) and
   the next round begins only when nothing runs: no batch in progress or
   stopping, no item running, the run's lease released.

2. Move and cancel, no worker: the queue is paused and filled with --queued
   (default 10,000) queued batches by one INSERT ... SELECT generate_series
   (ranks g * RANK_GAP, one item each), then ANALYZEd. It is rebuilt before each
   kind of operation, and each kind is timed --samples times (plus one untimed
   warm-up call): queue_manager.move(id, 1) of the tail batch, move(id, 10**6)
   (to the end) of the head, move of a random batch to the middle position,
   and queue_manager.cancel of the head, middle and tail batch (the queue
   shrinks by one per cancel). Each time is the whole call, commit and
   after-commit publish included. The floor beside them is one plain
   transaction, `UPDATE batches SET name = name WHERE id = :id` plus its commit.
   Moves to the same middle position halve the gap there each time, so every
   ~16th renumbers the queue (one UPDATE of every queued row): the table says
   how many renumberings each kind caused.

3. The same on a short queue (100 queued), for comparison.

    .venv/bin/python -m bench.control [--iterations 20] [--queued 10000] [--samples 50]

Uses DATABASE_URL / REDIS_URL when set, else the embedded servers under ./var/.
It works in a database of its own (batchq_bench_control) and Redis database 15.
"""

from __future__ import annotations

import argparse
import random
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench.handoff import start_worker, wait_for_worker
from bench.results import record
from bench.setup import bench_environment, insert_profiles, percentile

BENCH_DB = "batchq_bench_control"
BENCH_REDIS_DB = 15
CHANNEL = "batchq-bench-control:events"
PROFILES = 6
SLEEP_SECONDS = 0.5
SHORT_QUEUE = 100
TARGET_MS = 30.0
POLL_SECONDS = 0.005
WAIT_LIMIT = 30.0


@dataclass
class StopRound:
    call_ms: float
    interrupted_ms: float | None
    stopped_ms: float
    last_activity_ms: float
    started_after_stop: int


@dataclass
class Timings:
    samples: dict[str, list[float]] = field(default_factory=dict)
    renumbered: dict[str, int] = field(default_factory=dict)


def wait_for(what: str, probe: Callable[[], Any], limit: float = WAIT_LIMIT) -> Any:
    """Poll `probe` (each look in a fresh transaction) until it returns something truthy."""
    from app.extensions import db

    deadline = time.monotonic() + limit
    while True:
        value = probe()
        db.session.rollback()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"bench.control: gave up waiting {limit:g} s for {what}")
        time.sleep(POLL_SECONDS)


# --- 1. stop ------------------------------------------------------------------


def measure_stops(iterations: int, profile_ids: list[int], commits: list[float]) -> list[StopRound]:
    return [stop_round(index, profile_ids, commits) for index in range(iterations)]


def stop_round(index: int, profile_ids: list[int], commits: list[float]) -> StopRound:
    """Start a sleep batch, stop it while its 2nd item runs, and read when everything happened."""
    from app.extensions import db
    from app.services import leases, queue_manager
    from app.services.queue_manager import NewBatch
    from app.services.runs.watcher import STOP_POLL_SECONDS

    text = db.text
    batch, _ = queue_manager.enqueue(
        NewBatch(
            name=f"stop-{index}",
            processor="sleep",
            parameters={"seconds": SLEEP_SECONDS},
            profile_ids=profile_ids,
            created_by="bench",
        )
    )
    batch_id = batch.id
    queue_manager.start("bench")
    wait_for(
        f"batch {batch_id}'s 2nd item to run",
        lambda: db.session.execute(
            text("SELECT status = 'running' FROM batch_items WHERE batch_id = :id AND position = 1"),
            {"id": batch_id},
        ).scalar(),
    )
    time.sleep(random.uniform(0, STOP_POLL_SECONDS))  # a random phase of the watcher's polls
    called = time.perf_counter()
    queue_manager.stop(batch_id, "bench")
    call_ms = (time.perf_counter() - called) * 1000
    stop_at = commits[-1]  # the stop's own commit: stop() commits once, then only reads
    db.session.rollback()
    finished_at = wait_for(
        f"batch {batch_id} to be stopped",
        lambda: db.session.execute(
            text("SELECT finished_at FROM batches WHERE id = :id AND status = 'stopped'"), {"id": batch_id}
        ).scalar(),
    )
    items = db.session.execute(
        text("SELECT started_at, finished_at FROM batch_items WHERE batch_id = :id"), {"id": batch_id}
    ).all()
    interrupted = db.session.execute(
        text("SELECT min(at) FROM batch_logs WHERE batch_id = :id AND message LIKE '%interrupted by the stop%'"),
        {"id": batch_id},
    ).scalar()
    db.session.rollback()
    later = [moment.timestamp() for row in items for moment in row if moment and moment.timestamp() > stop_at]
    started_after = sum(1 for row in items if row.started_at and row.started_at.timestamp() > stop_at)
    result = StopRound(
        call_ms=call_ms,
        interrupted_ms=(interrupted.timestamp() - stop_at) * 1000 if interrupted else None,
        stopped_ms=(finished_at.timestamp() - stop_at) * 1000,
        last_activity_ms=(max(later) - stop_at) * 1000 if later else 0.0,
        started_after_stop=started_after,
    )
    # Nothing may run into the next round: the run must have ended and let go of its lease.
    wait_for(
        f"batch {batch_id}'s run to end",
        lambda: (
            not db.session.execute(
                text(
                    "SELECT EXISTS (SELECT 1 FROM batches WHERE status IN ('in_progress', 'stopping'))"
                    " OR EXISTS (SELECT 1 FROM batch_items WHERE status = 'running')"
                )
            ).scalar()
            and not leases.is_held(batch_id)
        ),
    )
    return result


# --- 2. and 3. move and cancel -------------------------------------------------


def build_queue(size: int, profile_id: int) -> None:
    """Empty the tables, pause the queue and fill it with `size` queued batches of one item."""
    from app.extensions import db
    from app.services.queue_ranks import RANK_GAP

    text = db.text
    db.session.execute(text("TRUNCATE batch_logs, batch_items, batches CASCADE"))  # the webhook outbox too
    db.session.execute(text("UPDATE queue_state SET paused = true, paused_by = 'bench', paused_at = now()"))
    db.session.execute(
        text(
            "INSERT INTO batches (name, status, queue_rank, processor, parameters, profile_ids, total_items,"
            " succeeded_items, failed_items, created_at, run_attempts, created_by)"
            " SELECT 'queued-' || g, 'queued', g * CAST(:gap AS bigint), 'noop', '{}', ARRAY[CAST(:profile AS int)],"
            " 1, 0, 0, now(), 0, 'bench'"
            " FROM generate_series(1, :size) AS g"
        ),
        {"gap": RANK_GAP, "profile": profile_id, "size": size},
    )
    db.session.execute(
        text(
            "INSERT INTO batch_items (batch_id, position, profile_id, status, attempts)"
            " SELECT id, 0, :profile, 'pending', 0 FROM batches"
        ),
        {"profile": profile_id},
    )
    db.session.commit()
    db.session.execute(text("ANALYZE batches, batch_items, batch_logs"))
    db.session.commit()


def queued_at(where: str) -> int:
    """The id of the head, middle, tail or a random one of the queued batches (not timed)."""
    from app.extensions import db

    text = db.text
    count = db.session.execute(text("SELECT count(*) FROM batches WHERE queue_rank IS NOT NULL")).scalar_one()
    skip = {"head": 0, "middle": count // 2, "tail": count - 1, "random": random.randrange(count)}[where]
    batch_id = db.session.execute(
        text("SELECT id FROM batches WHERE queue_rank IS NOT NULL ORDER BY queue_rank OFFSET :skip LIMIT 1"),
        {"skip": skip},
    ).scalar_one()
    db.session.rollback()
    return batch_id


def queued_count() -> int:
    from app.extensions import db

    count = db.session.execute(db.text("SELECT count(*) FROM batches WHERE queue_rank IS NOT NULL")).scalar_one()
    db.session.rollback()
    return count


def plain_update(batch_id: int) -> None:
    from app.extensions import db

    db.session.execute(db.text("UPDATE batches SET name = name WHERE id = :id"), {"id": batch_id})
    db.session.commit()


def kinds() -> list[tuple[str, str, Callable[[int], Callable[[], Any]]]]:
    """Each kind: its label, which batch it takes, and, given that batch, the call to time.

    Whatever a call needs to know (the middle position) is read before the clock starts.
    """
    from app.services import queue_manager

    def to_middle(batch_id: int) -> Callable[[], Any]:
        target = max(1, queued_count() // 2)
        return lambda: queue_manager.move(batch_id, target, "bench")

    return [
        ("UPDATE one row + commit (floor)", "random", lambda batch_id: lambda: plain_update(batch_id)),
        ("move tail -> #1", "tail", lambda batch_id: lambda: queue_manager.move(batch_id, 1, "bench")),
        ("move head -> end (10**6)", "head", lambda batch_id: lambda: queue_manager.move(batch_id, 10**6, "bench")),
        ("move random -> middle", "random", to_middle),
        ("cancel head", "head", lambda batch_id: lambda: queue_manager.cancel(batch_id, "bench")),
        ("cancel middle", "middle", lambda batch_id: lambda: queue_manager.cancel(batch_id, "bench")),
        ("cancel tail", "tail", lambda batch_id: lambda: queue_manager.cancel(batch_id, "bench")),
    ]


def measure_steering(size: int, samples: int, profile_id: int, renumbers: list[str]) -> Timings:
    from app.extensions import db

    timings = Timings()
    for label, where, prepare in kinds():
        build_queue(size, profile_id)
        prepare(queued_at(where))()  # warm-up: statement caches, the first look at the rebuilt tables
        db.session.expunge_all()
        renumbers.clear()
        times = []
        for _ in range(samples):
            call = prepare(queued_at(where))
            started = time.perf_counter()
            call()
            times.append((time.perf_counter() - started) * 1000)
            db.session.expunge_all()
        timings.samples[label] = times
        timings.renumbered[label] = len(renumbers)
    return timings


# --- report ------------------------------------------------------------------


def p50_max(values: list[float]) -> str:
    return f"{percentile(values, 0.50):8.1f} {max(values):8.1f}"


def print_report(rounds: list[StopRound], long: Timings, short: Timings, size: int) -> None:
    print(
        f"stop, real prefork worker: {len(rounds)} rounds of {PROFILES} x sleep {SLEEP_SECONDS:g} s,"
        " stopped at a random moment of item 2 (ms)"
    )
    print(f"  {'':36} {'p50':>8} {'max':>8}")
    interrupted = [r.interrupted_ms for r in rounds if r.interrupted_ms is not None]
    rows = [
        ("stop() call, commit included", [r.call_ms for r in rounds]),
        ("stop -> item interrupted (log line)", interrupted),
        ("stop -> batch stopped (finished_at)", [r.stopped_ms for r in rounds]),
        ("stop -> last item activity", [r.last_activity_ms for r in rounds]),
    ]
    for label, values in rows:
        print(f"  {label:36} {p50_max(values) if values else '       -        -'}")
    print(
        f"  items started after the stop: {sum(r.started_after_stop for r in rounds)};"
        f" rounds where no item was interrupted: {len(rounds) - len(interrupted)}"
    )
    print()
    print("move / cancel, queue paused, no worker (ms; each call commits and publishes)")
    head = f"{size:,} queued"
    tail = f"{SHORT_QUEUE:,} queued"
    print(f"  {'':33} {head:>27}   {tail:>27}")
    print(f"  {'':33} {'p50':>7} {'p95':>7} {'max':>7} {'ren':>4}   {'p50':>7} {'p95':>7} {'max':>7} {'ren':>4}")
    for label in long.samples:
        cells = []
        for timings in (long, short):
            found = timings.samples[label]
            cells.append(
                f"{percentile(found, 0.50):7.2f} {percentile(found, 0.95):7.2f} {max(found):7.2f}"
                f" {timings.renumbered[label]:4d}"
            )
        print(f"  {label:33} {cells[0]}   {cells[1]}")
    samples = len(next(iter(long.samples.values())))
    print(f"  n={samples} per kind; ren = queue renumberings the kind caused; target: under {TARGET_MS:g} ms each")
    stopped = [r.stopped_ms for r in rounds]
    if stopped:
        worst = max(stopped)
        record("control", "stop -> batch stopped, max", worst, "ms", target="< 1,000 ms", met=worst < 1000)
    late = sum(r.started_after_stop for r in rounds)
    record("control", "items started after a committed stop", late, "items", target="0", met=late == 0)
    for label in long.samples:
        p50 = percentile(long.samples[label], 0.5)
        record(
            "control",
            f"{label}, {size:,} queued, p50",
            p50,
            "ms",
            baseline=percentile(short.samples[label], 0.5),
            baseline_measure=f"{SHORT_QUEUE:,} queued",
            target=f"< {TARGET_MS:g} ms",
            met=p50 < TARGET_MS,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=20, help="stops to time with the real worker")
    parser.add_argument("--queued", type=int, default=10_000, help="queued batches for the move/cancel timings")
    parser.add_argument("--samples", type=int, default=50, help="calls timed per kind of move/cancel")
    args = parser.parse_args()

    env = bench_environment(BENCH_DB, BENCH_REDIS_DB, CHANNEL)
    from sqlalchemy import event
    from sqlalchemy.orm import Session

    from app import create_app
    from app.extensions import db

    app = create_app()
    commits: list[float] = []
    renumbers: list[str] = []
    event.listen(Session, "after_commit", lambda _session: commits.append(time.time()))
    random.seed(20261129)
    with app.app_context():
        event.listen(
            db.engine,
            "before_cursor_execute",
            lambda _conn, _cursor, statement, *_: (
                renumbers.append(statement) if "row_number() OVER (ORDER BY queue_rank)" in statement else None
            ),
        )
        profile_ids = insert_profiles(PROFILES)
        profile_ids.sort()
        # Paused: each round's enqueue waits for its Start, as after a stop.
        db.session.execute(db.text("UPDATE queue_state SET paused = true, paused_by = 'bench', paused_at = now()"))
        db.session.commit()

        worker = start_worker(env)
        try:
            wait_for_worker(env)
            rounds = measure_stops(args.iterations, profile_ids, commits)
        finally:
            worker.terminate()
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()

        long = measure_steering(args.queued, args.samples, profile_ids[0], renumbers)
        short = measure_steering(SHORT_QUEUE, args.samples, profile_ids[0], renumbers)
        db.session.remove()
    print_report(rounds, long, short, args.queued)


if __name__ == "__main__":
    main()
