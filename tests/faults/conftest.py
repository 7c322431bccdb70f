"""Fault-test fixtures: a real prefork `celery worker` subprocess that tests kill, and stand-ins for lost messages."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from celery import Celery
from flask import Flask

from app.config import Settings
from app.services import dispatch
from tests.conftest import SESSION_TAG, wait_for

ROOT = Path(__file__).resolve().parents[2]


class WorkerProcess:
    """A `celery worker` subprocess (prefork) on keys of its own, killed like a lost machine."""

    def __init__(self, settings: Settings, prefix: str, log_dir: Path) -> None:
        self.env = {
            **os.environ,
            "DATABASE_URL": settings.database_url,
            "REDIS_URL": settings.redis_url,
            "SECRET_KEY": "test-secret",
            "BATCHQ_EVENTS_CHANNEL": settings.events_channel,
            "BATCH_HEARTBEAT_TIMEOUT": "2",
            "PROCESSOR_MODULES": "tests.faults.stubborn",
            "BATCHQ_TEST_KEYPREFIX": prefix,
            "PYTHONPATH": str(ROOT),
        }
        self.log_dir = log_dir
        self.process: subprocess.Popen[bytes] | None = None
        self.started = 0

    def start(self, sender: Celery) -> None:
        self.started += 1
        name = f"faults{self.started}-{SESSION_TAG}@%h"
        log = (self.log_dir / f"worker{self.started}.log").open("wb")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "tests.faults.worker_app:celery_app",
                "worker",
                "-P",
                "prefork",
                "-c",
                "2",
                "-Q",
                "batches,control",
                "-n",
                name,
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "-l",
                "INFO",
            ],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_for(lambda: self._answers(sender, name.replace("%h", "")), timeout=20, interval=0.1)

    def _answers(self, sender: Celery, prefix: str) -> bool:
        assert self.process is not None and self.process.poll() is None, self.log()
        replies = sender.control.ping(timeout=0.3) or []
        return any(name.startswith(prefix) for reply in replies for name in reply)

    def kill(self) -> None:
        """SIGKILL the whole process group: the main process and its pool children at once."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def log(self) -> str:
        return "\n".join(path.read_text(errors="replace")[-3000:] for path in sorted(self.log_dir.glob("*.log")))


@pytest.fixture
def prefork_worker(
    app: Flask, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[WorkerProcess]:
    """A prefork worker subprocess, with this process's dispatches routed to it (and only to it)."""
    prefix = f"batchq-{SESSION_TAG}-faults-{uuid.uuid4().hex[:6]}:"
    sender = Celery("faults", set_as_current=False)
    sender.config_from_object("celeryconfig")
    sender.conf.update(
        broker_url=settings.broker_url,
        result_backend=settings.redis_url,
        broker_transport_options={**sender.conf.broker_transport_options, "global_keyprefix": prefix},
        result_backend_transport_options={
            **sender.conf.result_backend_transport_options,
            "global_keyprefix": prefix,
        },
    )
    monkeypatch.setattr(dispatch, "celery", lambda: sender)
    worker = WorkerProcess(settings, prefix, tmp_path)
    worker.sender = sender  # type: ignore[attr-defined]
    try:
        yield worker
    finally:
        worker.kill()
        client = redis.Redis.from_url(settings.redis_url)
        keys = list(client.scan_iter(match=f"{prefix}*"))
        if keys:
            client.delete(*keys)
        sender.close()
