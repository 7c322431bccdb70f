"""Viewers benchmark: how many open table pages one web process keeps within 1 s of every status change.

While BATCHES one-item noop batches run back to back on a real prefork worker, N simulated viewers
(bench/viewer_swarm.py: each holds the live stream and re-fetches the table region as app.js does) watch
one gunicorn process (WEB_WORKERS=1, gevent, as the Procfile runs it). Every promotion is a status change:
a viewer's lag for it runs from the batch's `started_at` to the first region it fetched that shows it (the
queued count one lower). A viewer is kept current when every lag is under a second.

The baseline, in the same run, is the same viewers against the same process with the shared render off
(bench/unshared_wsgi.py: every fetch renders its own table, as before app/live/shared_render.py).
Not a test: it prints figures and never fails on them.

    .venv/bin/python -m bench.viewers [--viewers 10,50,200,500] [--batches 1000]

Uses DATABASE_URL / REDIS_URL when set, else the embedded servers under ./var/.
It works in a database of its own (batchq_bench_viewers) and Redis database 12.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bench import processes
from bench.live import free_port, signed_in_session, start_web
from bench.results import record
from bench.setup import ROOT, bench_environment, percentile

BENCH_DB = "batchq_bench_viewers"
BENCH_REDIS_DB = 12
CHANNEL = "batchq-bench-viewers:events"
USER, PASSWORD = "bench", "bench-password"
CURRENT_S = 1.0
APPS = {"shared render": "wsgi:app", "baseline (a render per fetch)": "bench.unshared_wsgi:app"}


@dataclass
class Round:
    viewers: int
    kept_current: int
    lags_ms: list[float]
    batches_per_s: float
    renders: str


def queue_batches(app: Any, count: int) -> None:
    """`count` one-profile noop batches, queued while the queue is paused (Start sets them going)."""
    from app.extensions import db
    from app.services import queue_manager
    from app.services.queue_manager import NewBatch

    with app.app_context():
        db.session.execute(db.text("DELETE FROM batches"))
        db.session.execute(db.text("UPDATE queue_state SET paused = true, paused_by = 'bench'"))
        db.session.commit()
        profile_id = db.session.execute(db.text("SELECT min(id) FROM profiles")).scalar_one()
        db.session.rollback()
        for index in range(count):
            queue_manager.enqueue(
                NewBatch(name=f"viewers-{index}", processor="noop", parameters={}, profile_ids=[profile_id])
            )


def promotions(app: Any) -> list[float]:
    """When each batch started (unix seconds), in order."""
    from app.extensions import db

    with app.app_context():
        started: list[datetime] = list(
            db.session.execute(db.text("SELECT started_at FROM batches ORDER BY started_at")).scalars()
        )
        db.session.rollback()
    return [moment.timestamp() for moment in started]


def lags_of(seen: list[tuple[float, int]], started: list[float]) -> list[float]:
    """For the k-th promotion (queued count total-k after it), the wait until a fetch showed it (ms)."""
    total = len(started)
    lags, index = [], 0
    for k, started_at in enumerate(started, start=1):
        while index < len(seen) and seen[index][1] > total - k:
            index += 1
        shown_at = seen[index][0] if index < len(seen) else float("inf")
        lags.append(max(0.0, shown_at - started_at) * 1000)
    return lags


def run_round(app: Any, url: str, cookies: str, viewers: int, batches: int) -> Round:
    from app.services import queue_manager

    queue_batches(app, batches)
    swarm = subprocess.Popen(
        [sys.executable, "-m", "bench.viewer_swarm", url, cookies, str(viewers), str(60 + batches / 5)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert swarm.stdout is not None
    assert swarm.stdout.readline().strip() == "ready", "the viewers did not connect"
    began = time.monotonic()
    with app.app_context():
        queue_manager.start("bench")
    seen_by_viewer = [json.loads(line) for line in swarm.stdout]
    swarm.wait(timeout=60)
    elapsed = time.monotonic() - began
    started = promotions(app)
    per_viewer = [lags_of([(t, q) for t, q in seen], started) for seen in seen_by_viewer]
    kept = sum(1 for lags in per_viewer if lags and max(lags) <= CURRENT_S * 1000)
    fetches = sum(len(seen) for seen in seen_by_viewer)
    return Round(viewers, kept, [lag for lags in per_viewer for lag in lags], batches / elapsed, f"{fetches} fetches")


def report(label: str, result: Round) -> None:
    lags = result.lags_ms
    print(
        f"{label:31s} {result.viewers:4d} viewers: {result.kept_current:4d} kept within 1 s   "
        f"lag p50 {percentile(lags, 0.5):7.0f} ms  p95 {percentile(lags, 0.95):7.0f} ms  "
        f"max {max(lags):7.0f} ms   {result.batches_per_s:5.1f} batches/s, {result.renders}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--viewers", default="10,50,200,500", help="comma-separated viewer counts")
    parser.add_argument("--batches", type=int, default=1000)
    args = parser.parse_args()
    counts = [int(count) for count in args.viewers.split(",")]

    env = bench_environment(BENCH_DB, BENCH_REDIS_DB, CHANNEL, SECRET_KEY="bench-viewers", WEB_WORKERS="1")
    from app import create_app
    from app.extensions import db
    from app.models import Role
    from app.services import accounts

    app = create_app()
    with app.app_context():
        accounts.create_user(USER, PASSWORD, Role.OPERATOR)
        db.session.execute(db.text("INSERT INTO profiles (name, attributes, created_at) VALUES ('p', '{}', now())"))
        db.session.commit()
    kept: dict[tuple[str, int], int] = {}
    worker = processes.start_worker(env, "--without-mingle", "--without-gossip", loglevel="WARNING")
    try:
        for label, wsgi_app in APPS.items():
            port = free_port()
            web = start_web(env, port, app=wsgi_app)
            url = f"http://127.0.0.1:{port}"
            cookies = json.dumps(signed_in_session(url).cookies.get_dict())
            try:
                for count in counts:
                    result = run_round(app, url, cookies, count, args.batches)
                    report(label, result)
                    kept[label, count] = result.kept_current
            finally:
                web.terminate()
                web.wait(timeout=30)
    finally:
        processes.stop(worker)
    print(f"one gunicorn process (gevent), {args.batches} one-item noop batches back to back per round")
    print("target: at least 200 viewers kept within 1 s of every status change")
    shared, unshared = APPS
    for count in counts:
        record(
            "viewers",
            f"viewers of {count} kept within 1 s",
            kept[shared, count],
            "viewers",
            better="higher",
            baseline=kept[unshared, count],
            baseline_measure="a render per fetch",
            target="200 of 200" if count >= 200 else None,
            met=kept[shared, count] >= 200 if count >= 200 else None,
        )


if __name__ == "__main__":
    main()
