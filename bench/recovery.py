"""Recovery benchmark: from a worker's death to its batch running again, and a soak of kills that must lose nothing.

Not a test: it prints figures and never fails on them. It exits 1 only if a
correctness check fails (a batch that did not end `done`, two batches or
items that ran at the same time, an item that ran again after it had ended), or if it crashed.

Both parts run a real prefork worker and celery beat, started as the Procfile
starts them (`REMAP_SIGTERM=SIGQUIT celery -A workers.celery_app worker
--loglevel=INFO -E -Q batches,control --concurrency=3`, each in a process
group of its own, and `celery -A workers.celery_app beat --schedule=<tmp>`),
with BATCH_HEARTBEAT_TIMEOUT and RECONCILE_INTERVAL set in their environment.
The worker's and beat's logs are kept in a temporary directory named at the end.

1. Worker death -> recovery (--heartbeat-timeout, default 10 s; --reconcile-interval,
   default 5 s, the production default). Each of --rounds rounds measures two kills:

   a) The whole worker dies. Batch A (6 profiles, `sleep` 1 s each) is enqueued
      with batch B (1 profile, `noop`) behind it. Once A's 2nd item is running,
      the bench waits a random 0 to 0.9 s (so the kill lands at a random phase of
      the run's heartbeat, as a real crash would), SIGKILLs the worker's whole
      process group (os.killpg: main process and pool children at once; T_death
      is taken right after the call) and at once starts a new worker, as a
      supervisor restarting the service would. Nothing tells the queue: a
      repair round (the timer in beat and in every worker) re-dispatches A once no
      process holds its lease and its worker is known gone (its liveness record three
      heartbeats late, or a worker of the same name started since, as the new one
      is), else once its heartbeat is older than BATCH_HEARTBEAT_TIMEOUT. Measured
      from T_death: the new worker ready (the "ready." line of its log), the
      "run lost ..." line, A's "run began ..." line after T_death (the run resumed),
      the first of A's items started after T_death, and B's started_at. Also shown:
      the age of A's last heartbeat at T_death. Target: A's run resumed under
      BATCH_HEARTBEAT_TIMEOUT + 5 s.

   b) Only the pool child running A dies. Same batches; its pid is asked of the
      worker (control.inspect().active(): the request whose id is A's dispatch
      token) and SIGKILLed alone once A's 2nd item runs (same random wait). The
      worker's main process sees the child die, the run task's task_failure
      signal sends queue.recover_run and the run is dispatched again at once,
      without waiting for the heartbeat. Measured from the kill: the worker's main
      process noticed the child's death (its log's "exited with 'signal 9" line),
      the "run lost" line, A's run began again, its item started again, B started.

   Timestamps are written by the worker's and the database's clocks and T_death
   by this process's, all on the same machine. A round begins only once nothing
   runs (no batch in progress, the last run's lease released).

2. Soak: --soak-batches (default 1000) batches of 2 profiles, `sleep` 0.01 s each,
   are enqueued up front (queue paused, queue_manager.enqueue in a loop, then
   Start). Every --kill-every (default 100) finished batches, after a random 0 to
   0.2 s (a few batches' time: the kill lands at a random point of a run or of a
   handoff, not always just after the count moved), the worker's process group is
   SIGKILLed and a new worker started at once. To end in minutes, the
   soak restarts worker and beat with a short BATCH_HEARTBEAT_TIMEOUT
   (--soak-heartbeat-timeout, default 3 s) and RECONCILE_INTERVAL
   (--soak-reconcile-interval, default 1 s); production uses 30 s and 5 s. It
   gives up after --soak-timeout seconds. Then it counts: batches by status (all
   must be `done`: none lost, none left queued or in progress), kills, recoveries
   ("run lost" log lines), items that ran more than once (attempts > 1: expected
   only in batches whose run was lost), and checks that nothing overlapped:
   every batch, in started_at order, started at or after the previous one's
   finished_at, and likewise every item (so at most one batch, and one item, was
   ever in progress), and that no item's end was written twice (none ran again
   after it had succeeded or failed). The overlap checks cover every batch of the
   run, part 1's too; the queries are bench.invariants', shared with bench.several_hosts.

    .venv/bin/python -m bench.recovery [--rounds 5] [--heartbeat-timeout 10] [--reconcile-interval 5]
        [--soak-batches 1000] [--kill-every 100] [--soak-heartbeat-timeout 3] [--soak-reconcile-interval 1]
        [--soak-timeout 600]

Uses DATABASE_URL / REDIS_URL when set, else the embedded servers under ./var/.
It works in a database of its own (batchq_bench_recovery) and Redis database 12
(13, 14 and 15 belong to bench.live, bench.handoff and bench.control).
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

from bench import processes
from bench.handoff import wait_for_worker
from bench.invariants import batch_overlaps, fetch, item_overlaps, items_ended_twice, items_rerun, scalar
from bench.results import record
from bench.setup import bench_environment, insert_profiles, percentile

BENCH_DB = "batchq_bench_recovery"
BENCH_REDIS_DB = 12
CHANNEL = "batchq-bench-recovery:events"
PROFILES = 6
ITEM_SECONDS = 1.0
SOAK_PROFILES = 2
SOAK_SECONDS = 0.01
SOAK_KILL_JITTER = 0.2
TARGET_MARGIN = 5.0
POLL_SECONDS = 0.02


class Services:
    """The worker and beat subprocesses, each in a process group of its own, and their logs."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.log_dir = log_dir
        self.worker: subprocess.Popen[bytes] | None = None
        self.beat: subprocess.Popen[bytes] | None = None
        self.worker_log: Path | None = None
        self.workers_started = 0
        self.beats_started = 0

    def start(self, heartbeat_timeout: float, reconcile_interval: float) -> None:
        """Start beat and a worker with these timings; return once the worker answers."""
        self.env = {
            **self.env,
            "BATCH_HEARTBEAT_TIMEOUT": f"{heartbeat_timeout:g}",
            "RECONCILE_INTERVAL": f"{reconcile_interval:g}",
            "REMAP_SIGTERM": "SIGQUIT",
        }
        self.start_beat()
        self.start_worker()
        wait_for_worker(self.env)

    def start_worker(self) -> None:
        self.workers_started += 1
        self.worker_log = self.log_dir / f"worker-{self.workers_started}.log"
        self.worker = processes.start_worker(self.env, "-E", log=self.worker_log)

    def start_beat(self) -> None:
        self.beats_started += 1
        schedule = self.log_dir / f"celerybeat-schedule-{self.beats_started}"
        self.beat = processes.start_beat(self.env, schedule, log=self.log_dir / f"beat-{self.beats_started}.log")

    def kill_worker(self) -> float:
        """SIGKILL the worker's whole process group; return the wall-clock time right after the kill."""
        assert self.worker is not None
        if self.worker.poll() is not None:
            raise RuntimeError(f"bench.recovery: the worker had already exited; see {self.worker_log}")
        os.killpg(self.worker.pid, signal.SIGKILL)
        killed_at = time.time()
        self.worker.wait(timeout=10)
        return killed_at

    def logged_at(self, ending: str) -> float | None:
        """When the current worker logged a line ending with `ending` (its log's local timestamp), if it has."""
        if self.worker_log is None or not self.worker_log.exists():
            return None
        for line in self.worker_log.read_text(errors="replace").splitlines():
            if line.rstrip().endswith(ending) and line.startswith("["):
                stamp = line[1 : line.index(":", line.index(" ") + 7)]  # "[2026-01-02 10:11:12,345: INFO/..."
                return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()
        return None

    def check_alive(self) -> None:
        for name, process, log in (("worker", self.worker, self.worker_log), ("beat", self.beat, None)):
            if process is not None and process.poll() is not None:
                where = log or self.log_dir
                raise RuntimeError(f"bench.recovery: the {name} exited with {process.returncode}; see {where}")

    def stop(self) -> None:
        """End both process groups (SIGTERM, then SIGKILL after a few seconds)."""
        for process in (self.worker, self.beat):
            processes.stop(process)
        self.worker = self.beat = None

    def kill_leftovers(self) -> None:
        """Last resort (crash, Ctrl-C): SIGKILL whatever is left of both groups, pool children included."""
        for process in (self.worker, self.beat):
            processes.kill(process)


# --- database reads ------------------------------------------------------------


def wait_for(what: str, probe: Callable[[], Any], limit: float, services: Services | None = None) -> Any:
    """Poll `probe` until it returns something truthy; give up after `limit` seconds."""
    deadline = time.monotonic() + limit
    while True:
        value = probe()
        if value:
            return value
        if services is not None:
            services.check_alive()
        if time.monotonic() > deadline:
            raise RuntimeError(f"bench.recovery: gave up waiting {limit:g} s for {what}")
        time.sleep(POLL_SECONDS)


def enqueue(name: str, processor: str, parameters: dict[str, Any], profile_ids: list[int]) -> int:
    from app.services import queue_manager
    from app.services.queue_manager import NewBatch

    batch, _ = queue_manager.enqueue(
        NewBatch(name=name, processor=processor, parameters=parameters, profile_ids=profile_ids, created_by="bench")
    )
    return batch.id


def log_lines(batch_id: int) -> list[str]:
    rows = fetch("SELECT at, level, message FROM batch_logs WHERE batch_id = :id ORDER BY at, id", id=batch_id)
    return [f"{row.at.isoformat(timespec='milliseconds')} {row.level}: {row.message}" for row in rows]


def nothing_runs() -> bool:
    from app.services import leases

    running = fetch("SELECT id FROM batches WHERE status IN ('in_progress', 'stopping')")
    last = scalar("SELECT max(id) FROM batches WHERE started_at IS NOT NULL")
    return not running and (last is None or not leases.is_held(last))


# --- 1. worker death -> recovery -----------------------------------------------


@dataclass
class Round:
    """One kill and what followed, in seconds from the kill (None: did not happen)."""

    a: int
    b: int
    heartbeat_age: float
    logged: float | None  # a) the new worker's "ready." line; b) the main process's line on the child's death
    lost: float | None
    lost_line: str | None
    began: float | None
    item: float | None
    b_started: float | None
    a_status: str
    b_status: str


def since(moment: datetime | None, killed_at: float) -> float | None:
    return None if moment is None else moment.timestamp() - killed_at


def read_round(a: int, b: int, killed_at: float, logged_at: float | None, heartbeat_age: float) -> Round:
    after = datetime.fromtimestamp(killed_at, UTC)
    lines = fetch("SELECT at, message FROM batch_logs WHERE batch_id = :id AND at > :t ORDER BY at, id", id=a, t=after)
    lost = next((line for line in lines if line.message.startswith("run lost")), None)
    began = next((line for line in lines if line.message.startswith("run began")), None)
    item = scalar("SELECT min(started_at) FROM batch_items WHERE batch_id = :id AND started_at > :t", id=a, t=after)
    statuses = dict(fetch("SELECT id, status FROM batches WHERE id IN (:a, :b)", a=a, b=b))
    return Round(
        a=a,
        b=b,
        heartbeat_age=heartbeat_age,
        logged=None if logged_at is None else logged_at - killed_at,
        lost=since(lost.at if lost else None, killed_at),
        lost_line=lost.message if lost else None,
        began=since(began.at if began else None, killed_at),
        item=since(item, killed_at),
        b_started=since(scalar("SELECT started_at FROM batches WHERE id = :id", id=b), killed_at),
        a_status=statuses[a],
        b_status=statuses[b],
    )


def start_pair(label: str, profile_ids: list[int]) -> tuple[int, int]:
    """Batch A (6 x sleep 1 s) and batch B (1 x noop) behind it; A starts at once (the queue runs)."""
    a = enqueue(f"{label}-A", "sleep", {"seconds": ITEM_SECONDS}, profile_ids)
    b = enqueue(f"{label}-B", "noop", {}, profile_ids[:1])
    return a, b


def second_item_running(a: int, limit: float, services: Services) -> None:
    wait_for(
        f"batch {a}'s 2nd item to run",
        lambda: scalar("SELECT status = 'running' FROM batch_items WHERE batch_id = :id AND position = 1", id=a),
        limit,
        services,
    )
    time.sleep(random.uniform(0, 0.9 * ITEM_SECONDS))  # a random moment of item 2: a random heartbeat phase


def wait_round_end(a: int, b: int, limit: float, services: Services) -> None:
    try:
        wait_for(
            f"batches {a} and {b} to end",
            lambda: scalar(
                "SELECT count(*) = 2 FROM batches WHERE id IN (:a, :b) AND finished_at IS NOT NULL", a=a, b=b
            ),
            limit,
            services,
        )
        wait_for("the last run to let go of its lease", nothing_runs, limit, services)
    except RuntimeError as error:
        logs = "\n".join(f"  batch {batch}: {line}" for batch in (a, b) for line in log_lines(batch))
        raise RuntimeError(f"{error}\n{logs}") from None


def heartbeat_age(a: int, killed_at: float) -> float:
    # Read after the kill: the dead run can't beat any more, and nothing re-dispatches
    # A (which would reset its heartbeat) before the heartbeat timeout.
    beat = scalar("SELECT heartbeat_at FROM batches WHERE id = :id", id=a)
    return killed_at - beat.timestamp()


def group_kill_round(index: int, services: Services, profile_ids: list[int], limit: float) -> Round:
    a, b = start_pair(f"group-kill-{index}", profile_ids)
    second_item_running(a, limit, services)
    killed_at = services.kill_worker()
    services.start_worker()  # as a supervisor restarting the service would, at once
    age = heartbeat_age(a, killed_at)
    wait_round_end(a, b, limit, services)
    return read_round(a, b, killed_at, services.logged_at(" ready."), age)


def find_pool_child(token: str, limit: float, services: Services) -> int:
    """The pid of the pool child executing the dispatch `token`, asked of the worker itself."""
    from flask import current_app

    celery_app = current_app.extensions["celery"]

    def probe() -> int | None:
        replies = celery_app.control.inspect(timeout=1).active() or {}
        return next(
            (
                request["worker_pid"]
                for requests in replies.values()
                for request in requests
                if request.get("id") == token
            ),
            None,
        )

    return wait_for(f"the pool child running dispatch {token}", probe, limit, services)


def child_kill_round(index: int, services: Services, profile_ids: list[int], limit: float) -> Round:
    a, b = start_pair(f"child-kill-{index}", profile_ids)
    token = wait_for(
        f"batch {a}'s run to begin",
        lambda: scalar(
            "SELECT dispatch_token FROM batches WHERE id = :id AND status = 'in_progress' AND run_attempts > 0", id=a
        ),
        limit,
        services,
    )
    pid = find_pool_child(token, limit, services)  # before item 2: inspect() takes its whole 1 s timeout
    second_item_running(a, limit, services)
    os.kill(pid, signal.SIGKILL)
    killed_at = time.time()
    age = heartbeat_age(a, killed_at)
    wait_round_end(a, b, limit, services)
    return read_round(a, b, killed_at, services.logged_at(f"pid:{pid} exited with 'signal 9 (SIGKILL)'"), age)


def measure_kills(
    services: Services, rounds: int, profile_ids: list[int], limit: float
) -> tuple[list[Round], list[Round]]:
    group: list[Round] = []
    child: list[Round] = []
    for index in range(rounds):
        group.append(group_kill_round(index, services, profile_ids, limit))
        print_round_progress("a) group kill", index, rounds, group[-1])
        child.append(child_kill_round(index, services, profile_ids, limit))
        print_round_progress("b) child kill", index, rounds, child[-1])
    return group, child


def print_round_progress(kind: str, index: int, rounds: int, found: Round) -> None:
    print(
        f"  round {index + 1}/{rounds} {kind}: A=#{found.a} resumed {fmt(found.began)} s after the kill,"
        f" B=#{found.b} started {fmt(found.b_started)} s after",
        flush=True,
    )


# --- 2. soak -------------------------------------------------------------------


@dataclass
class Soak:
    batches: int
    elapsed: float = 0.0
    timed_out: bool = False
    kills: list[float] = field(default_factory=list)
    kills_while_running: int = 0
    kills_mid_item: int = 0


def run_soak(services: Services, batches: int, kill_every: int, timeout: float, profile_ids: list[int]) -> Soak:
    from app.extensions import db
    from app.services import queue_manager

    db.session.execute(db.text("UPDATE queue_state SET paused = true, paused_by = 'bench', paused_at = now()"))
    db.session.commit()
    for index in range(batches):
        enqueue(f"soak-{index}", "sleep", {"seconds": SOAK_SECONDS}, profile_ids[:SOAK_PROFILES])
    soak = Soak(batches=batches)
    started = time.monotonic()
    queue_manager.start("bench")
    next_kill, next_report = kill_every, 100
    while True:
        finished = scalar("SELECT count(*) FROM batches WHERE name LIKE 'soak-%' AND finished_at IS NOT NULL")
        if finished >= batches:
            break
        if time.monotonic() - started > timeout:
            soak.timed_out = True
            break
        if finished >= next_report:
            print(
                f"  soak: {finished}/{batches} batches finished, {len(soak.kills)} kills,"
                f" {time.monotonic() - started:.0f} s",
                flush=True,
            )
            next_report = (finished // 100 + 1) * 100
        if finished >= next_kill:
            # The count is seen crossing the mark just as the next batch is promoted: without a
            # random wait every kill would land in the same handoff, before the new run's claim.
            time.sleep(random.uniform(0, SOAK_KILL_JITTER))
            state = fetch(
                "SELECT EXISTS (SELECT 1 FROM batches WHERE status IN ('in_progress', 'stopping')) AS batch,"
                " EXISTS (SELECT 1 FROM batch_items WHERE status = 'running') AS item"
            )[0]
            soak.kills.append(services.kill_worker())
            services.start_worker()
            soak.kills_while_running += state.batch
            soak.kills_mid_item += state.item
            next_kill = (finished // kill_every + 1) * kill_every
        services.check_alive()
        time.sleep(POLL_SECONDS)
    soak.elapsed = time.monotonic() - started
    return soak


@dataclass
class Checks:
    """What the database says after the soak: the counts and every violation found."""

    statuses: Counter[str]
    recoveries: Counter[str]
    batches_rerun: int
    items_rerun: int
    items_rerun_unrecovered: list[Any]
    ended_twice: list[Any]
    batch_overlaps: list[Any]
    item_overlaps: list[Any]
    part1_not_done: list[Any]
    resumed_after_kill: list[float]

    @property
    def failed(self) -> bool:
        not_done = sum(count for status, count in self.statuses.items() if status != "done")
        return bool(not_done or self.batch_overlaps or self.item_overlaps or self.ended_twice or self.part1_not_done)


def check(kills: list[float]) -> Checks:
    soak = "name LIKE 'soak-%'"
    statuses = Counter(dict(fetch(f"SELECT status, count(*) FROM batches WHERE {soak} GROUP BY status")))
    recoveries = Counter(
        dict(
            fetch(
                "SELECT l.message, count(*) FROM batch_logs l JOIN batches b ON b.id = l.batch_id"
                f" WHERE b.{soak} AND l.message LIKE 'run lost%' GROUP BY l.message"
            )
        )
    )
    rerun = items_rerun(f"b.{soak}")
    part1_not_done = fetch(f"SELECT id, name, status FROM batches WHERE NOT {soak} AND status <> 'done'")
    resumed = []
    for killed_at in kills:
        first = scalar(
            "SELECT min(started_at) FROM batch_items WHERE started_at > :t", t=datetime.fromtimestamp(killed_at, UTC)
        )
        if first is not None:
            resumed.append(first.timestamp() - killed_at)
    return Checks(
        statuses=statuses,
        recoveries=recoveries,
        batches_rerun=len({row.batch_id for row in rerun}),
        items_rerun=len(rerun),
        items_rerun_unrecovered=[row for row in rerun if not row.recovered],
        ended_twice=items_ended_twice(),
        batch_overlaps=batch_overlaps(),
        item_overlaps=item_overlaps(),
        part1_not_done=part1_not_done,
        resumed_after_kill=resumed,
    )


# --- report --------------------------------------------------------------------


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def p50_max(values: list[float | None], rounds: int) -> str:
    found = [value for value in values if value is not None]
    if not found:
        return f"{'-':>7} {'-':>7}"
    missing = f"   ({rounds - len(found)} rounds without)" if len(found) < rounds else ""
    return f"{percentile(found, 0.50):7.2f} {max(found):7.2f}{missing}"


def _recovery_rows(logged_label: str) -> list[tuple[str, Any]]:
    """The table rows of part 1; only what the log line marks differs between its two kinds of kill."""
    return [
        ("A's last heartbeat, age at the kill", lambda r: r.heartbeat_age),
        (logged_label, lambda r: r.logged),
        ("kill -> 'run lost' logged", lambda r: r.lost),
        ("kill -> A's run resumed ('run began')", lambda r: r.began),
        ("kill -> A's interrupted item started again", lambda r: r.item),
        ("kill -> B started (started_at)", lambda r: r.b_started),
    ]


def print_rounds(
    title: str, rounds: list[Round], logged: str, rows: list[tuple[str, Callable[[Round], float | None]]]
) -> None:
    print(title)
    print(f"  {'':44} {'p50':>7} {'max':>7}")
    for label, value in rows:
        print(f"  {label:44} {p50_max([value(r) for r in rounds], len(rounds))}")
    print(f"  per round (s from the kill; log = {logged}):")
    print(
        f"    {'A':>5} {'B':>5} {'hb age':>6} {'log':>6} {'lost':>6} {'began':>6} {'item':>6} {'B':>6}"
        "  A/B status  recovery line"
    )
    for r in rounds:
        print(
            f"    {r.a:>5} {r.b:>5} {fmt(r.heartbeat_age):>6} {fmt(r.logged):>6} {fmt(r.lost):>6} {fmt(r.began):>6}"
            f" {fmt(r.item):>6} {fmt(r.b_started):>6}  {r.a_status}/{r.b_status}   {r.lost_line or 'none'}"
        )


def print_kills(group: list[Round], child: list[Round], heartbeat_timeout: float, reconcile_interval: float) -> None:
    target = heartbeat_timeout + TARGET_MARGIN
    print(
        f"1. worker death -> recovery, rounds: {len(group)}; real prefork worker (--concurrency=3) and beat,"
        f" BATCH_HEARTBEAT_TIMEOUT={heartbeat_timeout:g} s, RECONCILE_INTERVAL={reconcile_interval:g} s"
    )
    print(
        f"   batch A: {PROFILES} x sleep {ITEM_SECONDS:g} s, batch B: 1 x noop behind it;"
        " killed at a random moment of A's 2nd item (seconds)"
    )
    print_rounds(
        "a) SIGKILL of the worker's process group, a new worker started at once (recovery by the reconciler)",
        group,
        "the new worker ready",
        _recovery_rows("kill -> new worker ready (its log)"),
    )
    met = sum(1 for r in group if r.began is not None and r.began < target)
    print(
        f"  target: kill -> A's run resumed under {target:g} s (BATCH_HEARTBEAT_TIMEOUT + {TARGET_MARGIN:g} s):"
        f" met in {met}/{len(group)} rounds"
    )
    print()
    print_rounds(
        "b) SIGKILL of the pool child running A only (task_failure -> queue.recover_run, no heartbeat wait)",
        child,
        "the worker noticed the child died",
        _recovery_rows("kill -> worker noticed the child died (log)"),
    )
    at_once = sum(1 for r in child if r.lost_line and "run task failed" in r.lost_line)
    print(
        f"  recovered through task_failure ('its run task failed'): {at_once}/{len(child)};"
        f" by the reconciler ('no heartbeat'): {sum(1 for r in child if r.lost_line and 'no heartbeat' in r.lost_line)}"
    )


def print_soak(soak: Soak, checks: Checks, kill_every: int, heartbeat_timeout: float, interval: float) -> None:
    print(
        f"2. soak: {soak.batches} batches of {SOAK_PROFILES} x sleep {SOAK_SECONDS:g} s, enqueued up front;"
        f" the worker's process group SIGKILLed (and a new worker started) every {kill_every} finished batches"
    )
    print(
        f"   BATCH_HEARTBEAT_TIMEOUT={heartbeat_timeout:g} s, RECONCILE_INTERVAL={interval:g} s"
        " (shortened so the soak ends in minutes; production defaults: 30 s and 5 s)"
    )
    state = "TIMED OUT after" if soak.timed_out else "finished in"
    print(f"  {state} {soak.elapsed:.1f} s")
    statuses = ", ".join(f"{status} {count}" for status, count in sorted(checks.statuses.items())) or "none"
    not_done = sum(count for status, count in checks.statuses.items() if status != "done")
    unfinished = sum(checks.statuses.get(status, 0) for status in ("queued", "in_progress", "stopping"))
    print(f"  batches by status: {statuses}")
    print(f"  not done: {not_done} (still queued / in progress / stopping: {unfinished})")
    record(
        "recovery",
        f"soak, {soak.batches} batches, a worker kill every {kill_every}: not done",
        not_done,
        "batches",
        target="0",
        met=not_done == 0,
    )
    record("recovery", "soak: elapsed", soak.elapsed, "s")
    print(
        f"  worker kills: {len(soak.kills)} ({soak.kills_while_running} while a batch was in progress,"
        f" {soak.kills_mid_item} of them while an item was running)"
    )
    reasons = ", ".join(f"'{message}' {count}" for message, count in sorted(checks.recoveries.items()))
    print(f"  recoveries ('run lost' lines): {sum(checks.recoveries.values())}" + (f": {reasons}" if reasons else ""))
    if checks.resumed_after_kill:
        values = checks.resumed_after_kill
        print(
            f"  kill -> first item started after it (queue moving again): p50 {percentile(values, 0.5):.2f} s,"
            f" max {max(values):.2f} s"
        )
    print(
        f"  items run more than once (attempts > 1, at-least-once): {checks.items_rerun}"
        f" in {checks.batches_rerun} batches; in batches without a recovery: {len(checks.items_rerun_unrecovered)}"
    )
    for row in checks.items_rerun_unrecovered[:10]:
        print(f"    batch {row.batch_id} item {row.id}: {row.attempts} attempts, no 'run lost' line")
    print(f"  items whose end was written twice (ran again after succeeding or failing): {len(checks.ended_twice)}")
    for row in checks.ended_twice[:10]:
        print(f"    batch {row.batch_id} item {row.position}: {row.messages}")
    print(
        f"  overlaps (every batch of the run, part 1's too, by started_at): batches {len(checks.batch_overlaps)},"
        f" items {len(checks.item_overlaps)}"
    )
    for row in checks.batch_overlaps[:10]:
        print(f"    batch {row.id} started {row.started_at} before batch {row.prev_id} finished ({row.prev_finished})")
    for row in checks.item_overlaps[:10]:
        print(
            f"    batch {row.batch_id} item {row.id} started {row.started_at}; earlier items ran until {row.prev_end}"
        )
    for row in checks.part1_not_done:
        print(f"  part 1 batch {row.id} ({row.name}) ended {row.status}")
    print(f"  correctness: {'FAILED' if checks.failed else 'ok'} (all done, nothing lost, no overlap)")


def raise_on_sigterm(_signum: int, _frame: Any) -> NoReturn:
    raise SystemExit(143)  # clean up as on Ctrl-C


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="kill rounds of part 1 (each kills twice)")
    parser.add_argument("--heartbeat-timeout", type=float, default=10.0, help="BATCH_HEARTBEAT_TIMEOUT of part 1")
    parser.add_argument("--reconcile-interval", type=float, default=5.0, help="RECONCILE_INTERVAL of part 1")
    parser.add_argument("--soak-batches", type=int, default=1000, help="batches of the soak")
    parser.add_argument("--kill-every", type=int, default=100, help="finished batches between two kills in the soak")
    parser.add_argument("--soak-heartbeat-timeout", type=float, default=3.0, help="BATCH_HEARTBEAT_TIMEOUT of the soak")
    parser.add_argument("--soak-reconcile-interval", type=float, default=1.0, help="RECONCILE_INTERVAL of the soak")
    parser.add_argument("--soak-timeout", type=float, default=600.0, help="seconds before the soak gives up")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, raise_on_sigterm)

    env = bench_environment(BENCH_DB, BENCH_REDIS_DB, CHANNEL)
    from app import create_app
    from app.extensions import db
    from app.services import queue_manager

    app = create_app()
    random.seed(20261201)
    log_dir = Path(tempfile.mkdtemp(prefix="batchq-bench-recovery-"))
    services = Services(env, log_dir)
    began = time.monotonic()
    try:
        with app.app_context():
            profile_ids = insert_profiles(PROFILES)
            db.session.commit()
            queue_manager.start("bench")  # not paused: each enqueue starts its batch when the slot is free

            print(
                f"1. worker death -> recovery (rounds: {args.rounds};"
                f" BATCH_HEARTBEAT_TIMEOUT={args.heartbeat_timeout:g} s,"
                f" RECONCILE_INTERVAL={args.reconcile_interval:g} s)",
                flush=True,
            )
            services.start(args.heartbeat_timeout, args.reconcile_interval)
            limit = args.heartbeat_timeout + args.reconcile_interval + 60
            group, child = measure_kills(services, args.rounds, profile_ids, limit)
            services.stop()

            print(
                f"2. soak ({args.soak_batches} batches, a kill every {args.kill_every};"
                f" BATCH_HEARTBEAT_TIMEOUT={args.soak_heartbeat_timeout:g} s,"
                f" RECONCILE_INTERVAL={args.soak_reconcile_interval:g} s)",
                flush=True,
            )
            services.start(args.soak_heartbeat_timeout, args.soak_reconcile_interval)
            soak = run_soak(services, args.soak_batches, args.kill_every, args.soak_timeout, profile_ids)
            services.stop()
            checks = check(soak.kills)
            db.session.remove()
    finally:
        services.kill_leftovers()  # a crash or Ctrl-C mid-run: nothing of ours may outlive the bench
    print()
    print_kills(group, child, args.heartbeat_timeout, args.reconcile_interval)
    print()
    print_soak(soak, checks, args.kill_every, args.soak_heartbeat_timeout, args.soak_reconcile_interval)
    print()
    print(f"total {time.monotonic() - began:.0f} s; worker and beat logs: {log_dir}")
    if checks.failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
