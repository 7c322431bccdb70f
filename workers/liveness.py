"""Every worker and beat says it is alive, and runs the queue's repair rounds, on timers of its own.

Two daemon threads per process, started once the process is ready (and a third beside them, the
completion-webhook sender of workers/callbacks.py):

- the heartbeat writes the process's record (app/services/liveness.py) every
  HEARTBEAT_SECONDS on a connection of its own, so that the health check and
  the pages read liveness from the database instead of pinging workers;
- the repair timer runs a reconcile round every RECONCILE_INTERVAL seconds.
  Every worker and every beat runs it, so no single process is needed for the
  queue to repair itself; a round that another process ran within the period
  is skipped, and the queue lock keeps two rounds from overlapping. Being a
  timer, not a task, it stays out of Flower's task list. With RETENTION_DAYS
  set, the same timer purges old finished batches, at most once an hour
  (app/services/retention.py: `Schedule`), after the round and outside its
  transaction: the purge never holds the queue lock. The timer also folds the
  batches' status counts into one row per status (app/services/status_counts.py).

A graceful stop deletes the record; a killed process's record ages out.
"""

from __future__ import annotations

import atexit
import logging
import os
import socket
import threading
from collections.abc import Callable
from typing import Any

from celery.signals import beat_init, celeryd_init, worker_ready, worker_shutdown
from flask import Flask
from sqlalchemy import Connection

from app.extensions import db
from app.models.processes import BEAT, WORKER
from app.services import liveness, queue_repairs, retention, status_counts
from app.services.liveness import ProcessRecord
from workers.callbacks import CallbackSender

log = logging.getLogger(__name__)

# A round another process ran within this share of the period counts as this period's.
_ROUND_SHARE = 0.8


class ProcessLife:
    """The heartbeat and the repair timer of one worker or beat process."""

    def __init__(self, flask_app: Flask, record: ProcessRecord, repair_every: float | None) -> None:
        self.flask_app = flask_app
        self.record = record
        self.repair_every = repair_every
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._connection: Connection | None = None
        self._pid = os.getpid()
        self._retention = retention.Schedule(int(flask_app.config.get("RETENTION_DAYS") or 0))

    def start(self) -> ProcessLife:
        """Record the process now, then keep recording it and repairing the queue in the background."""
        self._pid = os.getpid()
        self._beat()
        self._spawn("heartbeat", liveness.HEARTBEAT_SECONDS, self._beat)
        if self.repair_every:
            self._spawn("repairs", self.repair_every, self._repair)
        return self

    def stop(self) -> None:
        """Stop both timers and delete the record: this process is leaving on purpose."""
        # A pool process forked from the worker inherits this object (and its atexit hook)
        # but not the threads: its exit must not remove the worker's record.
        if self._stopping.is_set() or os.getpid() != self._pid:
            return
        self._stopping.set()
        for thread in self._threads:
            thread.join(timeout=5)
        try:
            liveness.forget(self._heartbeat_connection(), self.record.name)
        except Exception:
            log.warning("could not remove the liveness record of %s", self.record.name, exc_info=True)
        self._close_connection()

    def _spawn(self, what: str, every: float, action: Callable[[], None]) -> None:
        def loop() -> None:
            while not self._stopping.wait(every):
                action()

        thread = threading.Thread(target=loop, name=f"batchq-{what}", daemon=True)
        thread.start()
        self._threads.append(thread)

    def _beat(self) -> None:
        try:
            liveness.record(self._heartbeat_connection(), self.record)
        except Exception:
            log.warning("heartbeat of %s not recorded; retrying", self.record.name, exc_info=True)
            self._close_connection()

    def _repair(self) -> None:
        config = self.flask_app.config
        try:
            with self.flask_app.app_context():
                queue_repairs.recover_lost_run(
                    heartbeat_timeout=config["BATCH_HEARTBEAT_TIMEOUT"],
                    stop_grace=config["STOP_GRACE_SECONDS"],
                    max_attempts=config["BATCH_MAX_RUN_ATTEMPTS"],
                    min_gap=float(config["RECONCILE_INTERVAL"]) * _ROUND_SHARE,
                )
        except Exception:
            log.warning("repair round failed; the next one retries", exc_info=True)
        self._compact_counts()
        self._purge()

    def _compact_counts(self) -> None:
        try:
            with self.flask_app.app_context():
                status_counts.compact()
        except Exception:
            log.warning("folding the status counts failed; the next round retries", exc_info=True)

    def _purge(self) -> None:
        try:
            with self.flask_app.app_context():
                self._retention.run_if_due()
        except Exception:
            log.warning("retention purge failed; a later round retries", exc_info=True)

    def _heartbeat_connection(self) -> Connection:
        """The heartbeat's own autocommit connection, so a slow repair round never delays it."""
        if self._connection is None or self._connection.invalidated or self._connection.closed:
            with self.flask_app.app_context():
                engine = db.engine
            self._connection = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        return self._connection

    def _close_connection(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                connection.close()
            except Exception:  # noqa: BLE001  (already broken)
                connection.invalidate()


def worker_record(consumer: Any) -> ProcessRecord:
    """What a worker says about itself: its node name, pool, concurrency and queues."""
    controller = getattr(consumer, "controller", None)
    pool_module = type(getattr(consumer, "pool", None)).__module__
    return ProcessRecord(
        name=consumer.hostname,
        kind=WORKER,
        host=socket.gethostname(),
        pid=os.getpid(),
        pool=pool_module.rsplit(".", 1)[-1] if pool_module.startswith("celery.concurrency") else None,
        concurrency=getattr(controller, "concurrency", None),
        queues=tuple(sorted(consumer.app.amqp.queues.consume_from)),
    )


def beat_record() -> ProcessRecord:
    host = socket.gethostname()
    return ProcessRecord(name=f"beat@{host}:{os.getpid()}", kind=BEAT, host=host, pid=os.getpid())


def install(flask_app: Flask) -> None:
    """Start the timers and the webhook sender in a worker's main process once it is ready, and in beat."""
    lives: list[ProcessLife | CallbackSender] = []
    repair_every = float(flask_app.config["RECONCILE_INTERVAL"])

    def begin(record: ProcessRecord) -> None:
        for life in (ProcessLife(flask_app, record, repair_every).start(), CallbackSender(flask_app).start()):
            lives.append(life)
            atexit.register(life.stop)

    @celeryd_init.connect(weak=False)
    def on_worker_init(sender: Any = None, **_: Any) -> None:
        liveness.this_worker = sender  # the node name

    @worker_ready.connect(weak=False)
    def on_worker_ready(sender: Any = None, **_: Any) -> None:
        begin(worker_record(sender))

    @worker_shutdown.connect(weak=False)
    def on_worker_shutdown(**_: Any) -> None:
        for life in lives:
            life.stop()

    @beat_init.connect(weak=False)
    def on_beat_init(**_: Any) -> None:
        begin(beat_record())
