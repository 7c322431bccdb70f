"""Each web process watches the service's health and hints its open streams when it changes.

A dead worker publishes nothing, and a broker that is down carries no hints:
the pages would keep showing a healthy service. So the web process itself
reads the recorded health (app/services/health.py) every second, once its
first stream has opened, and when what it reads changes (a worker aged out, the broker
answered again, a run lost its lease) it hands a "health" hint straight to
its own streams, without Redis. The pages then re-fetch their regions: the
banner and the waiting reasons.

A page also reads the health whenever a queue hint makes it re-fetch, which
may fall between two of the watcher's rounds: a worker that left and came
back between them would leave that page showing "no worker" for good, since
the watcher saw no change. So the pages tell the watcher what they showed
(`served`), and a round that finds a page was shown something other than what
the watcher last read hints the pages whatever it reads now.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Hashable

from flask import Flask
from sqlalchemy import text

from app.extensions import db
from app.live.hub import Hub
from app.services.health import ServiceHealth, read_health

log = logging.getLogger(__name__)

HEALTH_HINT = {"kind": "health", "batch_id": None}

# Whether the running batch's run holds its lease: its waiting reason turns on it.
_RUNNING_LEASE = text(
    """
    SELECT b.id, EXISTS (
        SELECT 1 FROM pg_locks l JOIN pg_database d ON d.oid = l.database
        WHERE l.locktype = 'advisory' AND l.granted AND d.datname = current_database()
            AND l.classid = :cls AND l.objid = b.id AND l.objsubid = 2
    ) AS held
    FROM batches b WHERE b.status IN ('in_progress', 'stopping')
    """
)


class HealthWatch:
    """The per-process watcher; started by the first stream of the process, ended with the hub."""

    def __init__(self, app: Flask, hub: Hub, every: float) -> None:
        self.app = app
        self.hub = hub
        self.every = every
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._lock = threading.Lock()
        # Counts the changes seen: the shared table renders are keyed by it, since the table's waiting
        # reasons turn on health, which moves no queue hint (app/live/shared_render.py).
        self.generation = 0
        # What the last round read of what the banner shows, and whether a page was shown something else since.
        self._last_shown: Hashable = None
        self._served_other = False

    def ensure_running(self) -> None:
        """Start the watcher in this process unless it runs (threads don't survive gunicorn's fork)."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive() and self._pid == os.getpid():
                return
            self._pid = os.getpid()
            self._thread = threading.Thread(target=self._watch, name="health-watch", daemon=True)
            self._thread.start()

    def served(self, health: ServiceHealth) -> None:
        """A page was shown this health: if the watcher last read another, its next round hints the pages."""
        if _shown(health) != self._last_shown:
            self._served_other = True

    def digest(self) -> tuple[Hashable, Hashable]:
        """What the pages show of the service's health, and which running batch holds its lease: comparable."""
        from app.services.leases import LEASE_CLASS

        with self.app.app_context():
            try:
                health = read_health()
                running = (
                    tuple(db.session.execute(_RUNNING_LEASE, {"cls": LEASE_CLASS}).all()) if health.database else ()
                )
            except Exception:  # the next look tries again; an unreadable database shows as such
                log.warning("health watch could not read the database", exc_info=True)
                running = ()
                health = None
            finally:
                db.session.remove()
        if health is None:
            return ("unreadable",), ()
        return _shown(health), running

    def _watch(self) -> None:
        # Read on every round, streams open or not: a page that opens between two rounds was
        # rendered with a reading at most one round newer than `last`, never an old one.
        last = self.look()
        while not self.hub.closing.wait(self.every):
            last = self.look(last)

    def look(self, last: tuple[Hashable, Hashable] | None = None) -> tuple[Hashable, Hashable]:
        """One round: hint the pages if the health changed since `last` or a page was shown another; return it."""
        served_other, self._served_other = self._served_other, False  # taken before the read: none is lost
        current = self._read()
        if last is not None and (current != last or served_other):
            self.generation += 1  # before the hint: a page re-fetching for it never gets an older render
            if self.hub.open_streams:
                self.hub.broadcast(dict(HEALTH_HINT))
        return current

    def _read(self) -> tuple[Hashable, Hashable]:
        current = self.digest()
        self._last_shown = current[0]
        return current


def _shown(health: ServiceHealth) -> Hashable:
    """What the pages show of the service's health (the banner, the waiting reasons), comparable."""
    workers = tuple(worker.name for worker in health.workers)
    return (health.database, health.broker, workers, health.beat_alive, health.repairs_late)
