"""Submissions benchmark: how many POST /batches the web process takes, and how fast it answers.

Starts the real web server (gunicorn with this repository's gunicorn.conf.py, as the Procfile runs
it) and sends REQUESTS creations of a PROFILES-profile noop batch from CLIENTS client threads, each
on a keep-alive connection with a real API token, in two states of the queue:

- paused: nothing runs, every batch joins the end of the queue;
- running: a real prefork worker runs the noop batches back to back while they are submitted,
  so creations meet promotions, run ends and their queue locks.

The baseline, in the same run, is bench/bare_insert.py: a bare Flask endpoint that inserts one
row, served by the same gunicorn settings (worker class and count), sent the same requests by the
same clients. Each state prints its rate, p50 and p99 beside the baseline's and their ratio.

After each state the queue's rules are checked and the benchmark fails if one broke (it never
fails on a figure): every request answered 201 and made one batch; the queued batches, in rank
order, are positions 1..n in creation (id) order; batches started in creation order; at most one
batch running, at the end and in every sample taken meanwhile.

    .venv/bin/python -m bench.submissions [--requests 1000] [--clients 16] [--profiles 5]

Uses DATABASE_URL / REDIS_URL when set, else the embedded servers under ./var/.
It works in a database of its own (batchq_bench_submissions) and Redis database 11.
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

from bench import processes
from bench.live import free_port, start_web
from bench.results import record
from bench.setup import bench_environment, percentile

BENCH_DB = "batchq_bench_submissions"
BENCH_REDIS_DB = 11
CHANNEL = "batchq-bench-submissions:events"
RUNNING = ("in_progress", "stopping")


@dataclass
class Round:
    """One state's figures: the latency of every timed request (ms) and the wall time they took (s)."""

    latencies_ms: list[float]
    seconds: float
    statuses: dict[int, int]

    @property
    def rate(self) -> float:
        return len(self.latencies_ms) / self.seconds

    def line(self, label: str, baseline: Round | None = None) -> str:
        text = (
            f"{label:28s} {self.rate:7.1f}/s   p50 {percentile(self.latencies_ms, 0.5):7.1f} ms   "
            f"p99 {percentile(self.latencies_ms, 0.99):7.1f} ms"
        )
        if baseline is not None:
            text += f"   {self.rate / baseline.rate:5.2f}x the baseline's rate"
        return text


def fire(port: int, path: str, bodies: list[bytes], clients: int, headers: dict[str, str], warmup: int) -> Round:
    """Send every body once, `clients` at a time, each client on one keep-alive connection.

    The first `warmup` requests (one per client) open the connections and warm the server's pools;
    they are answered like the rest but not timed.
    """
    headers = {"Content-Type": "application/json", **headers}
    lock = threading.Lock()
    next_index = [0]
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    warmed = threading.Barrier(clients + 1)

    def take() -> int | None:
        with lock:
            index = next_index[0]
            next_index[0] += 1
        return index if index < len(bodies) else None

    def send(connection: http.client.HTTPConnection, body: bytes) -> int:
        connection.request("POST", path, body=body, headers=headers)
        response = connection.getresponse()
        response.read()
        return response.status

    def client(number: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        try:
            status = send(connection, bodies[number])
            with lock:
                statuses[status] = statuses.get(status, 0) + 1
        finally:
            warmed.wait()
        while (index := take()) is not None:
            started = time.perf_counter()
            status = send(connection, bodies[index])
            elapsed = (time.perf_counter() - started) * 1000
            with lock:
                latencies.append(elapsed)
                statuses[status] = statuses.get(status, 0) + 1
        connection.close()

    next_index[0] = warmup
    threads = [threading.Thread(target=client, args=(number,), daemon=True) for number in range(clients)]
    for thread in threads:
        thread.start()
    warmed.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    return Round(latencies, time.perf_counter() - began, statuses)


class RunningSampler:
    """Counts the running batches every few milliseconds while a round runs; remembers the most seen."""

    def __init__(self, app: Any) -> None:
        self.app, self.most, self.samples = app, 0, 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> RunningSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._done.set()
        self._thread.join()

    def _sample(self) -> None:
        from app.extensions import db

        with self.app.app_context():
            while not self._done.wait(0.02):
                count = db.session.execute(
                    db.text("SELECT count(*) FROM batches WHERE status IN ('in_progress', 'stopping')")
                ).scalar_one()
                db.session.rollback()
                self.most, self.samples = max(self.most, count), self.samples + 1


def rule_violations(app: Any, expected: int) -> list[str]:
    """What is wrong with the queue after a round, read in one snapshot (empty: every rule holds)."""
    from app.extensions import db
    from app.models import Batch

    with app.app_context():
        db.session.execute(db.text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))
        rows = db.session.execute(
            db.select(Batch.id, Batch.status, Batch.queue_rank, Batch.queue_position, Batch.started_at)
        ).all()
        db.session.rollback()
    problems = []
    if len(rows) != expected:
        problems.append(f"{len(rows)} batches for {expected} creations")
    running = [row.id for row in rows if row.status in RUNNING]
    if len(running) > 1:
        problems.append(f"{len(running)} batches running: {running}")
    queued = sorted((row for row in rows if row.queue_rank is not None), key=lambda row: row.queue_rank)
    if [row.queue_position for row in queued] != list(range(1, len(queued) + 1)):
        problems.append("the queued batches' positions are not 1..n in rank order")
    if [row.id for row in queued] != sorted(row.id for row in queued):
        problems.append("the queue's order is not the order of creation")
    started = sorted((row for row in rows if row.started_at is not None), key=lambda row: (row.started_at, row.id))
    if [row.id for row in started] != sorted(row.id for row in started):
        problems.append("batches did not start in the order of creation")
    if started and queued and max(row.id for row in started) > queued[0].id:
        problems.append("a batch started before one created earlier that still waits")
    return problems


def reset_queue(app: Any, paused: bool) -> None:
    """No batches; the queue paused (a drain with nothing running pauses at once) or started."""
    from app.extensions import db
    from app.services import queue_manager

    with app.app_context():
        db.session.execute(db.text("TRUNCATE batch_logs, batch_items, batches CASCADE"))
        db.session.commit()
        if paused:
            queue_manager.drain("bench")
        else:
            queue_manager.start("bench")


def bodies_for(count: int, profile_ids: list[int], label: str) -> list[bytes]:
    return [
        json.dumps(
            {"name": f"{label}-{index}", "processor": "noop", "parameters": {}, "profile_ids": profile_ids}
        ).encode()
        for index in range(count)
    ]


def submissions_round(app: Any, port: int, token: str, bodies: list[bytes], clients: int, paused: bool) -> Round:
    """Send the creations in one state of the queue; raise if a rule broke."""
    reset_queue(app, paused)
    with RunningSampler(app) as sampler:
        result = fire(port, "/api/v1/batches", bodies, clients, {"Authorization": f"Bearer {token}"}, clients)
    problems = rule_violations(app, len(bodies))
    if result.statuses != {201: len(bodies)}:
        problems.append(f"answers by status: {result.statuses} (all {len(bodies)} should be 201)")
    if sampler.most > 1:
        problems.append(f"{sampler.most} batches running at once in a sample")
    if problems:
        raise SystemExit("a rule broke: " + "; ".join(problems))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000, help="timed creations per state")
    parser.add_argument("--clients", type=int, default=16, help="concurrent client threads")
    parser.add_argument("--profiles", type=int, default=5, help="profiles (items) per batch")
    args = parser.parse_args()

    # The API's rate limit stays on (its Redis round trip is part of a request), set out of reach.
    env = bench_environment(
        BENCH_DB, BENCH_REDIS_DB, CHANNEL, SECRET_KEY="bench-submissions", RATE_LIMIT_API="100000000/minute"
    )
    from app import create_app
    from app.extensions import db
    from app.models import Role
    from app.services import accounts
    from bench.bare_insert import TABLE
    from bench.setup import insert_profiles

    app = create_app()
    with app.app_context():
        token = accounts.create_token("bench", Role.OPERATOR)
        profile_ids = insert_profiles(args.profiles)
        db.session.execute(db.text(TABLE))
        db.session.commit()
    total = args.requests + args.clients
    results: dict[str, Round] = {}

    port = free_port()
    bare = start_web(env, port, app="bench.bare_insert:app")
    try:
        bodies = bodies_for(total, profile_ids, "bare")
        results["baseline"] = fire(port, "/rows", bodies, args.clients, {}, args.clients)
    finally:
        bare.terminate()
        bare.wait(timeout=30)
    if results["baseline"].statuses != {201: total}:
        raise SystemExit(f"the baseline failed: answers by status {results['baseline'].statuses}")

    port = free_port()
    web = start_web(env, port)
    worker = None
    try:
        results["paused"] = submissions_round(
            app, port, token, bodies_for(total, profile_ids, "paused"), args.clients, paused=True
        )
        worker = processes.start_worker(env, "--without-mingle", "--without-gossip", loglevel="WARNING")
        results["running"] = submissions_round(
            app, port, token, bodies_for(total, profile_ids, "running"), args.clients, paused=False
        )
    finally:
        processes.stop(worker)
        web.terminate()
        web.wait(timeout=30)

    baseline = results["baseline"]
    print(
        f"{args.requests} creations of a {args.profiles}-profile noop batch, {args.clients} clients, "
        f"gunicorn as the Procfile runs it"
    )
    print(baseline.line("baseline (bare insert)"))
    print(results["paused"].line("POST /batches, queue paused", baseline))
    print(results["running"].line("POST /batches, queue running", baseline))
    print("targets: at least 0.5x the baseline's rate and 300/s, p99 under 200 ms; every rule held")
    for state in ("paused", "running"):
        found = results[state]
        p99 = percentile(found.latencies_ms, 0.99)
        record(
            "submissions",
            f"POST /batches, queue {state}, {args.clients} clients",
            found.rate,
            "/s",
            better="higher",
            baseline=baseline.rate,
            baseline_measure="bare insert endpoint",
            target=">= 0.5x and >= 300/s",
            met=found.rate >= 0.5 * baseline.rate and found.rate >= 300,
        )
        record("submissions", f"POST /batches, queue {state}, p99", p99, "ms", target="< 200 ms", met=p99 < 200)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
