"""What every benchmark starts with: servers, a fresh database of its own, a Redis database of its own.

Each benchmark works on the servers the environment names (DATABASE_URL /
REDIS_URL) or else on the embedded ones under ./var/, in a database it drops
and creates, so a run never touches the data of `make run`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import redis

ROOT = Path(__file__).resolve().parent.parent


def timed(run: Callable[[], Any], samples: int) -> list[float]:
    """Milliseconds of each of `samples` calls, after one call that warms caches and the connection."""
    run()
    times = []
    for _ in range(samples):
        started = time.perf_counter()
        run()
        times.append((time.perf_counter() - started) * 1000)
    return times


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def server_urls() -> tuple[str, str]:
    """The PostgreSQL server and Redis to use: the environment's, or the embedded ones."""
    database_url, redis_url = os.environ.get("DATABASE_URL"), os.environ.get("REDIS_URL")
    if not (database_url and redis_url):
        from app.embedded.servers import ensure_running

        urls = ensure_running(ROOT / "var")
        database_url, redis_url = database_url or urls.database_url, redis_url or urls.redis_url
    return database_url, redis_url


def with_path(url: str, path: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=path))


def prepare_database(server_url: str, name: str) -> str:
    """Create the database `name` afresh on the server; return its URL."""
    plain = server_url.replace("postgresql+psycopg://", "postgresql://").replace("postgres://", "postgresql://")
    with psycopg.connect(plain, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        connection.execute(f'CREATE DATABASE "{name}"')
    return with_path(plain, f"/{name}")


def exit_on_sigterm() -> None:
    """Make SIGTERM (`kill`, `timeout`) end a benchmark through its `finally` blocks.

    Its workers and web servers run in sessions of their own (bench/processes.py), so a benchmark
    killed outright left them running, still consuming its queue: the next run's figures were
    measured against them too.
    """

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)


def bench_environment(database: str, redis_db: int, channel: str, **extra: str) -> dict[str, str]:
    """Prepare a migrated database and an empty Redis database; return the environment naming them.

    The environment is also applied to this process, so that create_app() here
    and the workers or web servers started with it see the same servers.
    """
    exit_on_sigterm()
    server_url, redis_server = server_urls()
    redis_url = with_path(redis_server, f"/{redis_db}")
    redis.Redis.from_url(redis_url).flushdb()
    env = {
        **os.environ,
        "DATABASE_URL": prepare_database(server_url, database),
        "REDIS_URL": redis_url,
        "CELERY_BROKER_URL": redis_url,
        "BATCHQ_EVENTS_CHANNEL": channel,
        # With DATABASE_URL set the service demands a SECRET_KEY; a benchmark signs nothing that lasts.
        "SECRET_KEY": os.environ.get("SECRET_KEY") or "bench-only",
        **extra,
    }
    subprocess.run(
        [sys.executable, "-m", "flask", "--app", "wsgi", "db", "upgrade"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
    )
    os.environ.update(env)
    return env


def insert_profiles(count: int) -> list[int]:
    """Insert `count` plain profiles in one statement (inside an app context); return their ids, in order."""
    from app.extensions import db

    return sorted(
        db.session.execute(
            db.text(
                "INSERT INTO profiles (name, attributes, created_at)"
                " SELECT 'bench-' || g, '{}', now() FROM generate_series(1, :n) AS g RETURNING id"
            ),
            {"n": count},
        ).scalars()
    )
