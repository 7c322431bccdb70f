"""Secrets kept under the var directory (session key, Flower password, the embedded servers'
passwords): generated on first use, then the same value for every process and every restart.
Each is a 0600 file: only the account that runs the stack may read it."""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path

from app.embedded.files import absolute, atomic_write, scratch_path


def ensure_secret(var_dir: Path, name: str, factory: Callable[[], str]) -> str:
    """Return the secret kept in `var_dir`/`name`, creating it with `factory()` the first time.

    Secrets (session key, Flower password) must survive restarts, and two processes starting
    at once must agree on one value: the file appears atomically (link of a complete temp file).
    """
    var_dir = absolute(var_dir)
    var_dir.mkdir(parents=True, exist_ok=True)
    path = var_dir / name
    for _ in range(50):
        try:
            value = path.read_text().strip()
        except FileNotFoundError:
            value = ""
        if value:
            _keep_private(path)
            return value
        if path.exists():  # empty file: another writer is mid-way, or a bad file; retry, then replace
            time.sleep(0.02)
            continue
        new = factory().strip()
        if not new:
            raise ValueError(f"secret factory for {name!r} returned an empty value")
        tmp = scratch_path(path)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, (new + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            continue  # someone else won; read theirs
        finally:
            tmp.unlink(missing_ok=True)
        return new
    # A persistently empty file: overwrite it.
    new = factory().strip()
    atomic_write(path, new + "\n", mode=0o600)
    return new


def _keep_private(path: Path) -> None:
    """Narrow a secret file a user (or an old copy of ./var/) left readable by others to 0600."""
    try:
        if path.stat().st_mode & 0o077:
            path.chmod(0o600)
    except OSError:
        pass  # not ours to change: reading it was enough


def new_secret_key() -> str:
    """Factory for var/secret_key (same shape as the app's own fallback)."""
    return secrets.token_urlsafe(32)


def new_flower_auth() -> str:
    """Factory for var/flower_auth: `admin:<random>` as Flower's --basic-auth expects."""
    return "admin:" + secrets.token_urlsafe(18)


def new_server_password() -> str:
    """Factory for var/postgres_password and var/redis_password.

    URL-safe, so the password goes into the servers' URLs, pg's SQL literal and redis.conf unquoted.
    """
    return secrets.token_urlsafe(24)
