"""The several-hosts soak itself, shared by bench.several_hosts and tests/faults/test_several_hosts.py.

Batches go in through the hosts' web servers (HTTP, one after the other,
alternately), a thread of their own, while the queue runs; the main loop kills
a worker host every `kill_every` finished batches and checks the queue's rules
(bench.invariants) right after each kill and once everything ended. Runs inside
an app context on the cluster's database.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import requests

from bench.cluster import Cluster, Host
from bench.invariants import fetch, items_rerun, scalar, step_violations

NAME = "hosts-"  # every batch of the soak is named hosts-<n>
ITEM_SECONDS = 0.01
KILL_JITTER = 0.2  # so a kill lands anywhere in a run or a handoff, not just as the count moved
POLL_SECONDS = 0.05


@dataclass
class Kill:
    host: str
    at: float  # wall clock, right before SIGKILL
    finished: int  # batches finished then
    held_run: bool  # the killed worker was running the batch in progress
    violations: list[str]
    recovery: float | None = None  # seconds from the kill to the next item's start


@dataclass
class SoakResult:
    batches: int
    elapsed: float = 0.0
    timed_out: bool = False
    kills: list[Kill] = field(default_factory=list)
    submitted_per_host: dict[str, int] = field(default_factory=dict)
    ran_per_host: dict[str, int] = field(default_factory=dict)
    statuses: Counter[str] = field(default_factory=Counter)
    items_rerun: int = 0
    final_violations: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return self.timed_out or bool(self.final_violations) or any(kill.violations for kill in self.kills)


class Submitter(threading.Thread):
    """POST the batches, one at a time, to each host's web server in turn; keep the ids in creation order."""

    def __init__(self, hosts: list[Host], token: str, profile_ids: list[int], count: int) -> None:
        super().__init__(name="submitter", daemon=True)
        self.hosts, self.count = hosts, count
        self.body = {"profile_ids": profile_ids, "processor": "sleep", "parameters": {"seconds": ITEM_SECONDS}}
        self.headers = {"Authorization": f"Bearer {token}"}
        self.ids: list[int] = []
        self.per_host: Counter[str] = Counter()
        self.error: str | None = None

    def run(self) -> None:
        sessions = [requests.Session() for _ in self.hosts]
        try:
            for index in range(self.count):
                host, session = self.hosts[index % len(self.hosts)], sessions[index % len(self.hosts)]
                body = {**self.body, "name": f"{NAME}{index}"}
                answer = session.post(f"{host.url}/api/v1/batches", json=body, headers=self.headers, timeout=30)
                if answer.status_code != 201:
                    self.error = f"POST /api/v1/batches on {host.name}: {answer.status_code} {answer.text[:300]}"
                    return
                self.ids.append(answer.json()["id"])
                self.per_host[host.name] += 1
        except requests.RequestException as error:
            self.error = f"submitting: {error!r}"


class Soak:
    def __init__(
        self, cluster: Cluster, token: str, profile_ids: list[int], progress: Callable[[str], None] | None = None
    ) -> None:
        self.cluster, self.token, self.profile_ids = cluster, token, profile_ids
        self.progress = progress or (lambda _line: None)
        self.last_killed: Host | None = None

    def run(self, batches: int, kill_every: int, timeout: float) -> SoakResult:
        """Submit `batches`, kill a worker host every `kill_every` finished ones; check after each kill, at the end."""
        result = SoakResult(batches=batches)
        submitter = Submitter(self.cluster.hosts, self.token, self.profile_ids, batches)
        started = time.monotonic()
        submitter.start()
        next_kill, next_report = kill_every, 100
        while True:
            finished = finished_count()
            if submitter.error:
                raise RuntimeError(submitter.error)
            if finished >= batches:
                break
            if time.monotonic() - started > timeout:
                result.timed_out = True
                break
            if finished >= next_report:
                self.progress(
                    f"  {finished}/{batches} finished, {len(result.kills)} kills, {time.monotonic() - started:.0f} s"
                )
                next_report = (finished // 100 + 1) * 100
            if finished >= next_kill:
                result.kills.append(self.kill_one(finished))
                next_kill = (finished // kill_every + 1) * kill_every
            self.cluster.check_alive()
            time.sleep(POLL_SECONDS)
        result.elapsed = time.monotonic() - started
        submitter.join(timeout=30)
        self.collect(result, submitter)
        return result

    def kill_one(self, finished: int) -> Kill:
        """SIGKILL the worker host running the current batch (else the one not killed last), start it again at once."""
        time.sleep(random.uniform(0, KILL_JITTER))
        running = scalar("SELECT worker_name FROM batches WHERE status IN ('in_progress', 'stopping')")
        host = self.cluster.host_of(running)
        held = host is not None
        if host is None:
            others = [h for h in self.cluster.hosts if h is not self.last_killed]
            host = others[0]
        killed_at = host.kill_worker()
        host.start_worker()  # as a supervisor restarting the service would, at once
        self.last_killed = host
        violations = step_violations()
        self.progress(
            f"  killed {host.name} ({'holding the run' if held else 'idle'}) after {finished} finished:"
            f" {'ok' if not violations else violations[:3]}"
        )
        return Kill(host.name, killed_at, finished, held, violations)

    def collect(self, result: SoakResult, submitter: Submitter) -> None:
        """What the database says once it ended: statuses, recoveries, the final checks."""
        result.submitted_per_host = dict(submitter.per_host)
        if len(submitter.ids) != result.batches:
            result.final_violations.append(f"only {len(submitter.ids)} of {result.batches} batches were submitted")
        if submitter.ids != sorted(submitter.ids):
            result.final_violations.append("batch ids were not given in submission order")
        result.statuses = Counter(dict(fetch("SELECT status, count(*) FROM batches GROUP BY status")))
        result.ran_per_host = dict(
            fetch("SELECT coalesce(worker_name, '-'), count(*) FROM batches WHERE finished_at IS NOT NULL GROUP BY 1")
        )
        result.items_rerun = len(items_rerun())
        result.final_violations += step_violations(all_ended=True)
        for kill in result.kills:
            first = scalar(
                "SELECT min(started_at) FROM batch_items WHERE started_at > :t", t=datetime.fromtimestamp(kill.at, UTC)
            )
            kill.recovery = None if first is None else first.timestamp() - kill.at


def finished_count() -> int:
    return int(scalar(f"SELECT count(*) FROM batches WHERE name LIKE '{NAME}%' AND finished_at IS NOT NULL"))


def handoff_seconds() -> list[float]:
    """Seconds from one batch's end (or the next one's creation, if later) to the next one's first item.

    The same run's baseline for the recoveries: taken over the batches whose run
    was never lost (one run began), so no kill came in between.
    """
    rows = fetch(
        "SELECT extract(epoch FROM first_item - greatest(prev_finished, created_at)) AS gap FROM ("
        " SELECT b.created_at, lag(b.finished_at) OVER (ORDER BY b.started_at, b.id) AS prev_finished,"
        " (SELECT min(i.started_at) FROM batch_items i WHERE i.batch_id = b.id) AS first_item,"
        " b.run_attempts FROM batches b WHERE b.started_at IS NOT NULL) s"
        " WHERE prev_finished IS NOT NULL AND first_item IS NOT NULL AND run_attempts = 1"
    )
    return [float(row.gap) for row in rows]
