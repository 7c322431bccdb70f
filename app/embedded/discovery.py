"""embedded.json: where the running servers listen, for processes that did not start them.

`python -m app.embedded` writes it under the lock whenever it starts or stops a server; a `flask`
command, a benchmark or the app's config reads it to find the servers with no variables set.
The URLs carry the servers' passwords, so the file is 0600 and its URLs are shown only `redacted`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from app.embedded.files import absolute, atomic_write
from app.embedded.ports import port_open
from app.embedded.processes import pid_alive

DISCOVERY_FILE = "embedded.json"


@dataclass(frozen=True)
class EmbeddedUrls:
    """Where the embedded servers listen.

    A URL is "" when that server is not embedded (the caller took it from the environment),
    so ``os.environ.get("DATABASE_URL") or urls.database_url`` reads naturally.
    """

    database_url: str
    redis_url: str


@dataclass(frozen=True)
class RunningServer:
    """A live embedded server: the pid that proves it still runs, and its URL."""

    pid: int
    url: str


def write_discovery(var_dir: Path, postgres: RunningServer | None, redis: RunningServer | None) -> EmbeddedUrls:
    """Record what actually runs under var_dir; remove the file when nothing does."""
    path = var_dir / DISCOVERY_FILE
    urls = EmbeddedUrls(database_url=postgres.url if postgres else "", redis_url=redis.url if redis else "")
    if not postgres and not redis:
        path.unlink(missing_ok=True)
        return urls
    payload = {
        "database_url": urls.database_url or None,
        "redis_url": urls.redis_url or None,
        "postgres_pid": postgres.pid if postgres else None,
        "redis_pid": redis.pid if redis else None,
    }
    atomic_write(path, json.dumps(payload, indent=2) + "\n", mode=0o600)
    return urls


def read_discovery(var_dir: Path) -> EmbeddedUrls | None:
    """The URLs in `var_dir`/embedded.json if every server it names is alive, else None.

    This is how a `flask` command run beside `make run` finds the servers with no variables
    set. It takes no lock and starts nothing, so it is cheap enough for every config load.
    """
    try:
        data = json.loads((absolute(var_dir) / DISCOVERY_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    database_url = data.get("database_url") or ""
    redis_url = data.get("redis_url") or ""
    if not database_url and not redis_url:
        return None
    for url, pid in ((database_url, data.get("postgres_pid")), (redis_url, data.get("redis_pid"))):
        if not url:
            continue
        port = _url_port(url)
        if not isinstance(pid, int) or port is None or not pid_alive(pid) or not port_open(port):
            return None
    return EmbeddedUrls(database_url=database_url, redis_url=redis_url)


def redacted(url: str) -> str:
    """`url` with its password replaced by ***, for anything printed or logged."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{parts.hostname}:{parts.port}"))


def _url_port(url: str) -> int | None:
    match = re.search(r"127\.0\.0\.1:(\d+)", url)
    return int(match.group(1)) if match else None
