"""Several hosts, one queue: batches submitted through two web servers, run by two worker hosts that get killed.

Not a test of speed: it prints figures and never fails on them. It exits 1 if a
rule of the queue broke (bench.invariants, checked after every kill and at the
end: at most one batch running, queued positions 1..n in creation order, starts
in creation order, no two batches or items overlapping, no item ended twice,
every batch `done`), or if it crashed. tests/faults/test_several_hosts.py runs
the same soak at a small size.

Two hosts (bench.cluster): each a worker (`-n celery@host-a` / `celery@host-b`,
prefork, 3 children), a gunicorn web server (WEB_WORKERS=1, a port of its own)
and beat, each process in a process group of its own and started in the
host's own directory, all on one PostgreSQL database and one Redis. --batches
batches (default 500) of 2 profiles x `sleep` 0.01 s are submitted one after the
other through POST /api/v1/batches, alternately to each web server, while the
queue runs. Every --kill-every finished batches (default 100), after a random
0 to 0.2 s, the worker host running the current batch (else the other one than
last time) is SIGKILLed, whole group, and started again at once under the same
node name. BATCH_HEARTBEAT_TIMEOUT and RECONCILE_INTERVAL are shortened
(--heartbeat-timeout 3 s, --reconcile-interval 1 s; production: 30 s and 5 s)
as in bench.recovery's soak, so that a kill that the dead host's liveness record
does not give away is found in seconds, not half a minute.

Figures: elapsed time, the kills (host, whether it held the running batch), the
recovery after each (kill -> the next item started, i.e. the queue moving again),
beside the same run's handoff (one batch's end -> the next one's first item, p50
over the batches no kill touched), and the checks.

    .venv/bin/python -m bench.several_hosts [--batches 500] [--kill-every 100]
        [--heartbeat-timeout 3] [--reconcile-interval 1] [--timeout 900]

Uses DATABASE_URL / REDIS_URL when set, else the embedded servers under ./var/.
It works in a database of its own (batchq_bench_hosts) and Redis database 6.
"""

from __future__ import annotations

import argparse
import random
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, NoReturn

from bench.cluster import Cluster
from bench.hosts_soak import Soak, SoakResult, handoff_seconds
from bench.results import record
from bench.setup import bench_environment, insert_profiles, percentile

BENCH_DB = "batchq_bench_hosts"
BENCH_REDIS_DB = 6
CHANNEL = "batchq-bench-hosts:events"


def report(result: SoakResult, args: argparse.Namespace) -> None:
    print()
    print(
        f"several hosts: {result.batches} batches of 2 x sleep 0.01 s through 2 web servers (alternately),"
        f" 2 worker hosts, 2 beats; a worker host SIGKILLed (whole group) and restarted every {args.kill_every}"
    )
    print(
        f"  BATCH_HEARTBEAT_TIMEOUT={args.heartbeat_timeout:g} s, RECONCILE_INTERVAL={args.reconcile_interval:g} s"
        " (shortened as in bench.recovery's soak; production defaults: 30 s and 5 s)"
    )
    state = "TIMED OUT after" if result.timed_out else "finished in"
    print(f"  {state} {result.elapsed:.1f} s; submitted through each web server: {result.submitted_per_host}")
    print(f"  batches run (ended) per worker host: {result.ran_per_host}")
    handoff = handoff_seconds()
    base = percentile(handoff, 0.5) if handoff else None
    print(f"  baseline, the same run: handoff (end -> next first item) p50 {_fmt(base)} s over {len(handoff)} batches")
    print(f"  kills: {len(result.kills)}")
    for kill in result.kills:
        held = "holding the running batch" if kill.held_run else "idle (the batch ran elsewhere, or none)"
        print(
            f"    after {kill.finished} finished: {kill.host} {held}; kill -> next item started"
            f" {_fmt(kill.recovery)} s; checks: {'ok' if not kill.violations else kill.violations[:5]}"
        )
    recoveries = [kill.recovery for kill in result.kills if kill.recovery is not None]
    if recoveries:
        print(f"  recovery: p50 {percentile(recoveries, 0.5):.2f} s, max {max(recoveries):.2f} s")
    not_done = sum(count for status, count in result.statuses.items() if status != "done")
    print(f"  batches by status: {dict(sorted(result.statuses.items()))}; not done: {not_done}")
    print(f"  items attempted more than once: {result.items_rerun} (in batches whose run was lost, at-least-once)")
    print(f"  final checks: {'ok' if not result.final_violations else ''}")
    for line in result.final_violations[:20]:
        print(f"    {line}")
    print(f"  correctness: {'FAILED' if result.failed else 'ok'}")
    _record(result, args, recoveries, base)


def _record(result: SoakResult, args: argparse.Namespace, recoveries: list[float], base: float | None) -> None:
    not_done = sum(count for status, count in result.statuses.items() if status != "done")
    label = f"{result.batches} batches, 2 hosts, a worker host killed every {args.kill_every}"
    record("several_hosts", f"{label}: not done", not_done, "batches", target="0", met=not_done == 0)
    broken = len(result.final_violations) + sum(len(kill.violations) for kill in result.kills)
    record("several_hosts", f"{label}: rule violations", broken, "findings", target="0", met=broken == 0)
    record("several_hosts", f"{label}: elapsed", result.elapsed, "s")
    if recoveries:
        record(
            "several_hosts",
            "kill -> queue moving again (max)",
            max(recoveries),
            "s",
            baseline=base,
            baseline_measure="handoff p50, same run",
        )


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def raise_on_sigterm(_signum: int, _frame: Any) -> NoReturn:
    raise SystemExit(143)  # clean up as on Ctrl-C


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=500, help="batches submitted")
    parser.add_argument("--kill-every", type=int, default=100, help="finished batches between two kills")
    parser.add_argument("--heartbeat-timeout", type=float, default=3.0, help="BATCH_HEARTBEAT_TIMEOUT")
    parser.add_argument("--reconcile-interval", type=float, default=1.0, help="RECONCILE_INTERVAL")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds before the soak gives up")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, raise_on_sigterm)

    env = bench_environment(
        BENCH_DB,
        BENCH_REDIS_DB,
        CHANNEL,
        BATCH_HEARTBEAT_TIMEOUT=f"{args.heartbeat_timeout:g}",
        RECONCILE_INTERVAL=f"{args.reconcile_interval:g}",
    )
    from app import create_app
    from app.extensions import db
    from app.services import accounts

    app = create_app()
    random.seed(20261203)
    root = Path(tempfile.mkdtemp(prefix="batchq-bench-hosts-"))
    cluster = Cluster(env, root)
    began = time.monotonic()
    try:
        with app.app_context():
            profile_ids = insert_profiles(2)
            token = accounts.create_token("bench-hosts")
            db.session.commit()
            print(f"starting 2 hosts (web, beat, worker each) under {root}", flush=True)
            cluster.start()
            soak = Soak(cluster, token, profile_ids, progress=lambda line: print(line, flush=True))
            result = soak.run(args.batches, args.kill_every, args.timeout)
            cluster.stop()
            report(result, args)
            db.session.remove()
    finally:
        cluster.kill_leftovers()  # nothing of ours may outlive the bench
    print(f"total {time.monotonic() - began:.0f} s; logs of every host: {root}")
    if result.failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
