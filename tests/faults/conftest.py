"""Fault-test fixtures: a real prefork `celery worker` subprocess that tests kill, and stand-ins for lost messages."""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from celery import Celery
from flask import Flask

from app.config import Settings
from app.redis_transport import transport_for
from app.services import dispatch
from bench import processes
from tests.brokers import is_amqp, session_broker
from tests.conftest import SESSION_TAG, wait_for

ROOT = Path(__file__).resolve().parents[2]

# Numbers the session's fault workers: every start gets a node name of its own.
_WORKER_NUMBERS = itertools.count(1)


class WorkerProcess:
    """A `celery worker` subprocess (prefork), started as the Procfile starts it, on Redis keys of its own.

    `sender` is a Celery app on the same broker and keys: the test's dispatches go
    through it, so this worker (and only it) receives them.
    """

    def __init__(self, settings: Settings, redis_url: str, log_dir: Path, broker_url: str | None = None) -> None:
        tag = f"{SESSION_TAG}-faults-{uuid.uuid4().hex[:6]}"
        self.prefix = f"batchq-{tag}:"
        self.redis_url = redis_url
        # On RabbitMQ (TEST_BROKER_URL) a virtual host of its own stands for the key prefix;
        # a broker given here is the test's own, used as it is.
        self._broker = contextlib.nullcontext(broker_url) if broker_url else session_broker(redis_url, tag)
        self.broker_url = self._broker.__enter__()
        self.env = {
            **os.environ,
            "DATABASE_URL": settings.database_url,
            "REDIS_URL": redis_url,
            "CELERY_BROKER_URL": self.broker_url,
            "SECRET_KEY": "test-secret",
            "BATCHQ_EVENTS_CHANNEL": settings.events_channel,
            "BATCH_HEARTBEAT_TIMEOUT": "2",
            "PROCESSOR_MODULES": "tests.faults.stubborn,tests.faults.probe",
            "BATCHQ_TEST_KEYPREFIX": self.prefix,
            # The worker's own repair timer stays out of the way unless a test asks for it
            # (start(repair_every=...)): most tests run their repair rounds by hand.
            "RECONCILE_INTERVAL": "3600",
            "REMAP_SIGTERM": "SIGQUIT",  # as the Procfile's worker line
            "PYTHONPATH": str(ROOT),
        }
        self.sender = Celery("faults", set_as_current=False)
        self.sender.config_from_object("celeryconfig")
        self.sender.conf.update(
            broker_url=self.broker_url,
            broker_transport=transport_for(self.broker_url),
            result_backend=redis_url,
            broker_transport_options={**self.sender.conf.broker_transport_options, "global_keyprefix": self.prefix},
            result_backend_transport_options={
                **self.sender.conf.result_backend_transport_options,
                "global_keyprefix": self.prefix,
            },
        )
        self.log_dir = log_dir
        self.process: subprocess.Popen[bytes] | None = None
        self.beat: subprocess.Popen[bytes] | None = None
        self.started = 0

    def start(
        self,
        queues: str = "batches,control",
        repair_every: float | None = None,
        wait: bool = True,
        env: dict[str, str] | None = None,
    ) -> None:
        """Start the worker and (unless `wait` is false) wait until it answers a ping.

        With `repair_every`, its repair timer runs a round that often; `env` adds
        or overrides variables of its environment.
        """
        self.started += 1
        # A name no earlier worker of the session had: a killed one's record stays fresh for a few
        # seconds, and would pass for this worker in a test that looks for it by name.
        name = f"faults{next(_WORKER_NUMBERS)}-{SESSION_TAG}@%h"
        self.process = processes.start_worker(
            {**self.env, **({"RECONCILE_INTERVAL": str(repair_every)} if repair_every else {}), **(env or {})},
            "-P",
            "prefork",
            "-n",
            name,
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            app="tests.faults.worker_app:celery_app",
            queues=queues,
            concurrency=2,
            log=self.log_dir / f"worker{self.started}.log",
        )
        self.name = name.replace("%h", "")
        self.hostname = name.replace("%h", socket.gethostname())
        if wait:
            wait_for(lambda: self._answers(self.name), timeout=60, interval=0.1)  # a loaded machine starts slowly

    def start_beat(self, interval: float = 1.0) -> None:
        """Celery beat on the same keys, running a repair round every `interval` seconds."""
        self.beat = processes.start_beat(
            {**self.env, "RECONCILE_INTERVAL": str(interval)},
            self.log_dir / "beat-schedule",
            app="tests.faults.worker_app:celery_app",
            loglevel="INFO",
            log=self.log_dir / "beat.log",
        )

    def _answers(self, prefix: str) -> bool:
        assert self.process is not None and self.process.poll() is None, self.log()
        replies = self.sender.control.ping(timeout=0.3) or []
        return any(name.startswith(prefix) for reply in replies for name in reply)

    def kill_beat(self) -> None:
        """SIGKILL beat: no chance to remove its liveness record."""
        if self.beat is not None and self.beat.poll() is None:
            processes.kill(self.beat)

    def kill(self) -> None:
        """SIGKILL the whole process group: the main process and its pool children at once."""
        processes.kill(self.process)

    def terminate(self, whole_group: bool = True, timeout: float = 20) -> float:
        """SIGTERM to the whole process group at once (as honcho and systemd send it) or to the main
        process only (`kill PID`); seconds until the worker exited."""
        assert self.process is not None
        began = time.monotonic()
        if whole_group:
            os.killpg(self.process.pid, signal.SIGTERM)
        else:
            os.kill(self.process.pid, signal.SIGTERM)
        self.process.wait(timeout=timeout)
        return time.monotonic() - began

    def pool_child_running(self, task_id: str) -> int:
        """The pid of the pool child executing this task (asked of the worker itself)."""

        def find() -> int | None:
            replies = self.sender.control.inspect(timeout=0.5).active() or {}
            return next(
                (
                    request["worker_pid"]
                    for requests in replies.values()
                    for request in requests
                    if request["id"] == task_id
                ),
                None,
            )

        return wait_for(find, timeout=30, interval=0.1)

    def waiting(self, queue: str) -> int:
        """How many messages wait in one of this worker's queues.

        On Redis the queue is a list under this worker's key prefix, read as it is (kombu's passive
        declare found nothing on the embedded, password-protected Redis); on RabbitMQ, a passive declare.
        """
        if not is_amqp(self.broker_url):
            return int(redis.Redis.from_url(self.broker_url).llen(f"{self.prefix}{queue}"))
        with self.sender.connection_for_write() as connection:
            try:
                return int(connection.default_channel.queue_declare(queue, passive=True).message_count)
            except connection.channel_errors:  # not declared yet: nothing was sent to it
                return 0

    def purge(self, queue: str) -> None:
        """Lose what waits in one of this worker's queues, as a broker that dropped it would."""
        if not is_amqp(self.broker_url):
            redis.Redis.from_url(self.broker_url).delete(f"{self.prefix}{queue}")
            return
        with self.sender.connection_for_write() as connection:
            connection.default_channel.queue_purge(queue)

    def log(self) -> str:
        return "\n".join(path.read_text(errors="replace")[-3000:] for path in sorted(self.log_dir.glob("*.log")))

    def close(self) -> None:
        self.kill()
        if self.beat is not None:
            self.beat.kill()
            self.beat.wait(timeout=10)
        try:
            client = redis.Redis.from_url(self.redis_url)
            keys = list(client.scan_iter(match=f"{self.prefix}*"))
            if keys:
                client.delete(*keys)
        finally:
            self.sender.close()
            self._broker.__exit__(None, None, None)


@pytest.fixture
def prefork_worker(
    app: Flask, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[WorkerProcess]:
    """A prefork worker subprocess (not started yet), with this process's dispatches routed to it."""
    worker = WorkerProcess(settings, settings.redis_url, tmp_path)
    monkeypatch.setattr(dispatch, "celery", lambda: worker.sender)
    try:
        yield worker
    finally:
        worker.close()
