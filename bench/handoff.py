"""Handoff benchmark: the idle time between one batch's last item and the next batch's first item.

Submits back-to-back single-profile `noop` batches to a real prefork Celery
worker (the Procfile's command) and reports p50/p95/p99 of the handoff, beside a
baseline measured in the same run: a bare Celery task whose task_success handler
dispatches the next one, on a worker of bare Celery (bench/bare_celery.py), then
again on the batchq worker. Not a test: it prints figures and never fails on them.

    .venv/bin/python -m bench.handoff [--batches 200]

Uses DATABASE_URL / REDIS_URL when set, else the embedded servers under ./var/.
It works in a database of its own (batchq_bench) and Redis database 14.
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import redis

from bench import processes
from bench.results import record
from bench.setup import bench_environment, percentile

BENCH_DB = "batchq_bench"
BENCH_REDIS_DB = 14


def summary(values_ms: list[float]) -> str:
    return (
        f"p50 {percentile(values_ms, 0.50):6.2f} ms   p95 {percentile(values_ms, 0.95):6.2f} ms   "
        f"p99 {percentile(values_ms, 0.99):6.2f} ms   (n={len(values_ms)})"
    )


def start_worker(env: dict[str, str], app: str = "workers.celery_app") -> subprocess.Popen[bytes]:
    """A prefork worker as the Procfile starts one, on the batchq app or on bare Celery."""
    options = ("--include=bench.baseline", "--without-mingle", "--without-gossip")
    return processes.start_worker(env, *options, app=app, loglevel="WARNING")


@contextmanager
def running_worker(env: dict[str, str], app: str) -> Iterator[None]:
    worker = start_worker(env, app)
    try:
        wait_for_worker(env)
        yield
    finally:
        worker.terminate()
        worker.wait(timeout=30)


def wait_for_worker(env: dict[str, str]) -> None:
    from celery import Celery

    probe = Celery(broker=env["REDIS_URL"])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if probe.control.ping(timeout=0.5):
            return
    raise RuntimeError("the bench worker did not answer within 60 s")


def measure_baseline(env: dict[str, str], count: int) -> list[float]:
    """Bare Celery: task N's task_success handler sends task N+1; gap = start(N+1) - end(N)."""
    from celery import Celery

    client = redis.Redis.from_url(env["REDIS_URL"])
    client.delete("bench:baseline")
    sender = Celery(broker=env["REDIS_URL"])
    sender.send_task("bench.ping", args=[0, count], queue="control")
    deadline = time.monotonic() + 120
    while client.llen("bench:baseline") < count and time.monotonic() < deadline:
        time.sleep(0.05)
    marks = [tuple(map(float, item.split(b","))) for item in client.lrange("bench:baseline", 0, -1)]
    marks.sort()
    return [(start_next - end_prev) * 1000 for (_, end_prev), (start_next, _) in itertools.pairwise(marks)]


@dataclass
class Handoff:
    """The gaps between consecutive batches, whole and in their three stages (ms)."""

    gaps: list[float]
    ending: list[float]  # last item finished -> batch finished (stamped as the run sends its end)
    promoting: list[float]  # batch finished -> next batch promoted (the end, signal, promotion task)
    starting: list[float]  # next batch promoted -> its first item started (run task; stamped as it claims)
    elapsed: float


def measure_handoff(env: dict[str, str], count: int) -> Handoff:
    """Submit `count` single-profile noop batches at once and read the gaps from the items' timestamps."""
    os.environ.update({k: env[k] for k in ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL")})
    from app import create_app
    from app.extensions import db
    from app.services import queue_manager
    from app.services.queue_manager import NewBatch

    app = create_app()
    with app.app_context():
        profile_id = db.session.execute(
            db.text("INSERT INTO profiles (name, attributes, created_at) VALUES ('bench', '{}', now()) RETURNING id")
        ).scalar_one()
        # Queue everything while paused, then Start: enqueueing alongside the
        # runs would compete with them for the queue lock and the two cores.
        db.session.execute(db.text("UPDATE queue_state SET paused = true"))
        db.session.commit()
        for index in range(count):
            queue_manager.enqueue(
                NewBatch(name=f"bench-{index}", processor="noop", parameters={}, profile_ids=[profile_id])
            )
        started = time.monotonic()
        queue_manager.start("bench")
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            left = db.session.execute(db.text("SELECT count(*) FROM batches WHERE finished_at IS NULL")).scalar()
            db.session.rollback()
            if left == 0:
                break
            time.sleep(0.1)
        elapsed = time.monotonic() - started
        rows = db.session.execute(
            db.text(
                "SELECT b.id, b.started_at, b.finished_at, min(i.started_at) AS first_start,"
                " max(i.finished_at) AS last_end"
                " FROM batches b JOIN batch_items i ON i.batch_id = b.id"
                " GROUP BY b.id ORDER BY min(i.started_at)"
            )
        ).all()
    pairs = list(itertools.pairwise(rows))

    def ms(later: Any, earlier: Any) -> float:
        return (later - earlier).total_seconds() * 1000

    return Handoff(
        gaps=[ms(b.first_start, a.last_end) for a, b in pairs],
        ending=[ms(a.finished_at, a.last_end) for a, b in pairs],
        promoting=[ms(b.started_at, a.finished_at) for a, b in pairs],
        starting=[ms(b.first_start, b.started_at) for a, b in pairs],
        elapsed=elapsed,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=200)
    args = parser.parse_args()

    env = bench_environment(BENCH_DB, BENCH_REDIS_DB, "batchq-bench:events")
    # One worker at a time, so that neither measurement shares the two cores with an idle worker.
    with running_worker(env, "bench.bare_celery"):
        bare = measure_baseline(env, args.batches)
    with running_worker(env, "workers.celery_app"):
        same_worker = measure_baseline(env, args.batches)
        handoff = measure_handoff(env, args.batches)
    print(f"baseline (bare Celery, task_success -> next task): {summary(bare)}")
    print(f"  the same on the batchq worker (its transport, Flask app context): {summary(same_worker)}")
    print(f"handoff  (batch end -> next batch's first item):  {summary(handoff.gaps)}")
    print(f"  1. last item -> batch finished (end stamped):  {summary(handoff.ending)}")
    print(f"  2. batch finished -> next promoted (end, signal hop): {summary(handoff.promoting)}")
    print(f"  3. promoted -> its first item (run hop, claim): {summary(handoff.starting)}")
    p50 = statistics.median(handoff.gaps)
    print(
        f"handoff p50 / baseline p50: {p50 / statistics.median(bare):.1f}x"
        f" (on the batchq worker's own hop: {p50 / statistics.median(same_worker):.1f}x)"
        f"   ({args.batches} batches in {handoff.elapsed:.1f} s)"
    )
    print("targets: handoff p50 within 3x the baseline, p99 < 20 ms")
    bare_p50, p99 = statistics.median(bare), percentile(handoff.gaps, 0.99)
    record(
        "handoff",
        "batch end -> next batch's first item, p50",
        p50,
        "ms",
        baseline=bare_p50,
        baseline_measure="bare Celery chain, p50",
        target="within 3x the baseline",
        met=p50 <= 3 * bare_p50,
    )
    record("handoff", "batch end -> next batch's first item, p99", p99, "ms", target="< 20 ms", met=p99 < 20)


if __name__ == "__main__":
    main()
