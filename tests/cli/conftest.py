"""The CLI as an operator runs it: `.venv/bin/flask --app wsgi ...` subprocesses, and a real worker.

The session's in-process worker listens on Redis keys under the session's prefix, which a
plain `flask` process (configured from the environment only, as in production) doesn't use:
its dispatches would reach no one. So these tests give the commands and a `celery worker`
subprocess (started as the Procfile starts it) a Redis server of their own, with the session's
database: the commands and the worker meet exactly as beside `make run`.
"""

from __future__ import annotations

import getpass
import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from app.config import Settings
from app.embedded import redis_server
from app.extensions import db
from bench import processes
from tests.conftest import SESSION_TAG, wait_for

ROOT = Path(__file__).resolve().parents[2]
FLASK = ROOT / ".venv" / "bin" / "flask"


@dataclass
class Done:
    """A finished command: its exit code and output."""

    code: int
    out: str
    err: str

    def json(self) -> Any:
        assert self.code == 0, self.err
        return json.loads(self.out)


@dataclass
class Cli:
    """Runs `flask --app wsgi ...` in a subprocess with the stack's environment."""

    env: dict[str, str]

    def __call__(self, *args: str, timeout: float = 120) -> Done:
        done = subprocess.run(
            [str(FLASK), "--app", "wsgi", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        return Done(done.returncode, done.stdout, done.stderr)

    def all(self, *commands: list[str], timeout: float = 120) -> list[Done]:
        """Run independent commands at once (each is a whole interpreter start): their results, in order."""
        started = [self.popen(*args, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for args in commands]
        results = []
        for process in started:
            out, err = process.communicate(timeout=timeout)
            results.append(Done(process.returncode, out, err))
        return results

    def popen(self, *args: str, **kwargs: Any) -> subprocess.Popen[str]:
        return subprocess.Popen([str(FLASK), "--app", "wsgi", *args], cwd=ROOT, env=self.env, text=True, **kwargs)


@dataclass
class Stack:
    """A Redis of the tests' own, the environment that points there and at the session's database."""

    env: dict[str, str]
    redis_url: str
    redis_pid: int
    worker: subprocess.Popen[bytes] | None = None


@pytest.fixture(scope="package")
def stack(app: Flask, settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("cli")
    redis_var = root / "redis-var"
    redis_server.ensure_started(redis_var)
    found = redis_server.running(redis_var)
    assert found is not None
    redis_url = redis_server.redis_url(found[1], redis_server.password(redis_var))
    env = {
        **{key: value for key, value in os.environ.items() if not key.startswith(("SECRET_KEY", "BATCHQ_"))},
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": redis_url,
        "SECRET_KEY": "cli-test",
        "BATCHQ_VAR_DIR": str(root / "var"),  # nothing of the checkout's own ./var/
        "BATCHQ_EVENTS_CHANNEL": settings.events_channel,
        "HTTP_PROCESSOR_ALLOWED_HOSTS": ",".join(settings.http_allowed_hosts),
        "RECONCILE_INTERVAL": "3600",  # no repair rounds of its own on the session's database
        "PYTHONPATH": str(ROOT),
    }
    try:
        yield Stack(env, redis_url, found[0])
    finally:
        redis_server.stop(redis_var)


@pytest.fixture(scope="package")
def worker(app: Flask, stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[subprocess.Popen[bytes]]:
    """A prefork `celery worker` on the stack's Redis, ready (its heartbeat recorded) before the tests begin.

    Stopped with the package's last test: its heartbeat must not outlive these tests, whose neighbours
    count the live workers.
    """
    name = f"cli-{SESSION_TAG}"
    log = tmp_path_factory.mktemp("cli-worker") / "worker.log"
    process = processes.start_worker(stack.env, "-P", "prefork", "-n", f"{name}@%h", concurrency=2, log=log)

    def ready() -> bool:
        assert process.poll() is None, log.read_text()[-3000:]
        with app.app_context():
            found = db.session.execute(
                db.text("SELECT 1 FROM service_processes WHERE name LIKE :name"), {"name": f"{name}@%"}
            ).first()
            db.session.remove()
        return found is not None

    wait_for(ready, timeout=90, interval=0.2)
    stack.worker = process
    try:
        yield process
    finally:
        processes.stop(process, timeout=20)  # SIGTERM: its heartbeat row goes with it


@pytest.fixture
def cli(stack: Stack, clean: None) -> Cli:
    return Cli(stack.env)


def query(app: Flask, sql: str, **params: Any) -> list[Any]:
    """Rows of a query on the session's database, read now."""
    with app.app_context():
        rows = list(db.session.execute(db.text(sql), params))
        db.session.remove()
    return rows


def actor() -> str:
    """What the commands record as their actor, run by this same user."""
    return f"cli:{getpass.getuser()}"
