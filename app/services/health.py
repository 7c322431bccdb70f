"""The service's own health, read from recorded state: the health check, the pages' banner, the waiting reasons.

Nothing here asks another process anything. Liveness comes from the heartbeats
workers and beats record (app/services/liveness.py); the broker is probed from
this process at most once a second, with a short timeout (a failure confirmed
by a second probe), and the answer is shared by every request meanwhile.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from celery import Celery
from flask import current_app
from sqlalchemy import text

from app.extensions import db
from app.services import liveness
from app.services.liveness import LiveProcess

# How long one broker probe answers for, and how long a probe may take.
BROKER_PROBE_TTL = 1.0
BROKER_PROBE_TIMEOUT = 0.5
# Repair rounds count as late after this many missed periods.
LATE_ROUNDS = 3

NO_WORKER = "No worker is running: batches wait until one starts"
BROKER_DOWN = "The broker is unreachable"
DATABASE_DOWN = "The database is unreachable"
REPAIRS_LATE = "Repairs are running late"


@dataclass(frozen=True)
class ServiceHealth:
    """What the service knows about its own parts right now."""

    database: bool
    broker: bool
    processes: list[LiveProcess] = field(default_factory=list)
    repairs_late: bool = False

    @property
    def workers(self) -> list[LiveProcess]:
        return liveness.workers(self.processes)

    @property
    def beat_alive(self) -> bool:
        return bool(liveness.beats(self.processes))

    @property
    def healthy(self) -> bool:
        """Ready to run batches: a missing beat alone is not a fault, since workers repair too."""
        return self.database and self.broker and bool(self.workers)

    def problems(self) -> list[str]:
        """One sentence for people per cause that keeps batches from moving; empty when all is well."""
        if not self.database:
            return [DATABASE_DOWN]
        found = []
        if not self.broker:
            found.append(BROKER_DOWN)
        if not self.workers:
            found.append(NO_WORKER)
        if self.repairs_late:
            found.append(REPAIRS_LATE + ("" if self.beat_alive else " (beat missing)"))
        return found


class BrokerProbe:
    """Whether the broker accepts a connection, asked at most once per TTL by this process."""

    def __init__(self, celery: Celery) -> None:
        self._celery = celery
        self._lock = threading.Lock()
        self._checked_at = float("-inf")
        self._ok = False

    def ok(self) -> bool:
        with self._lock:
            if time.monotonic() - self._checked_at >= BROKER_PROBE_TTL:
                # One connect slower than the timeout (a busy machine, a full accept queue) is not an
                # outage: a failure counts only when a second probe confirms it, or /health would flap.
                self._ok = self._probe() or self._probe()
                self._checked_at = time.monotonic()
            return self._ok

    def _probe(self) -> bool:
        try:
            with self._celery.connection_for_write() as connection:
                connection.ensure_connection(max_retries=1, interval_start=0, timeout=BROKER_PROBE_TIMEOUT)
            return True
        except Exception:  # noqa: BLE001  (any failure means: unreachable)
            return False


def broker_ok() -> bool:
    """The broker's reachability as this process last saw it (probed again once a second at most)."""
    probe: BrokerProbe | None = current_app.extensions.get("broker_probe")
    if probe is None:
        probe = current_app.extensions.setdefault("broker_probe", BrokerProbe(current_app.extensions["celery"]))
    return probe.ok()


# No round yet (a new database) is not late: the first comes one period after a worker or beat starts.
_REPAIRS_LATE = text(
    """
    SELECT coalesce(repaired_at < now() - make_interval(secs => :late), false)
    FROM queue_state
    """
)


def late_seconds() -> float:
    """How long since the last repair round counts as late."""
    return LATE_ROUNDS * float(current_app.config["RECONCILE_INTERVAL"])


def read_health() -> ServiceHealth:
    """The database, the broker, the live workers and beats, and whether repairs run on time.

    Reads in the caller's transaction, so that a page's banner and its batches'
    waiting reasons come from one snapshot.
    """
    broker = broker_ok()
    try:
        processes = liveness.alive()
        late = db.session.scalar(_REPAIRS_LATE, {"late": late_seconds()})
    except Exception:  # noqa: BLE001  (any failure means: the database is unreachable)
        db.session.rollback()
        return ServiceHealth(database=False, broker=broker)
    return ServiceHealth(database=True, broker=broker, processes=processes, repairs_late=bool(late))


def health_from(processes: list[LiveProcess], repairs_late: bool) -> ServiceHealth:
    """The service's health from what a caller read itself (app/services/waiting.py), the broker probed here."""
    return ServiceHealth(database=True, broker=broker_ok(), processes=processes, repairs_late=repairs_late)
