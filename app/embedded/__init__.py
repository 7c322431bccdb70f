"""Embedded, real PostgreSQL and Redis servers under ``./var/`` for machines that have none.

`make run` and `make test` start them when no DATABASE_URL / REDIS_URL is given; a `flask`
command run beside `make run` finds them through `read_discovery`. This package imports nothing
from the rest of the app, so the app's config can use it without an import cycle.
"""

from app.embedded.servers import (
    EmbeddedError,
    EmbeddedUrls,
    Started,
    ensure_running,
    ensure_secret,
    read_discovery,
    start_servers,
    status,
    stop,
    stop_servers,
)

__all__ = [
    "EmbeddedError",
    "EmbeddedUrls",
    "Started",
    "ensure_running",
    "ensure_secret",
    "read_discovery",
    "start_servers",
    "status",
    "stop",
    "stop_servers",
]
