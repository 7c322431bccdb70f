"""Command line of the embedded servers (what `make run` uses).

    python -m app.embedded run -- CMD [ARG...]   start what is missing, run CMD, stop what we started
    python -m app.embedded up                    start both, print where they listen (passwords hidden)
    python -m app.embedded down                  stop both
    python -m app.embedded status                what runs (exit 0 when both do)

The var directory is ./var, or $BATCHQ_VAR_DIR.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import FrameType

from app.embedded.servers import (
    EmbeddedError,
    ensure_secret,
    new_flower_auth,
    new_secret_key,
    redacted,
    start_servers,
    status,
    stop,
    stop_servers,
)

_FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def default_var_dir() -> Path:
    """./var unless BATCHQ_VAR_DIR says otherwise (the app's config reads the same variable)."""
    return Path(os.environ.get("BATCHQ_VAR_DIR") or "var").absolute()


def _say(message: str) -> None:
    print(f"batchq: {message}", flush=True)


def _kept_secrets(var_dir: Path) -> tuple[str, str]:
    """Generate var/secret_key and var/flower_auth once; return the session key and Flower credentials in use."""
    secret_key = ensure_secret(var_dir, "secret_key", new_secret_key)
    kept = ensure_secret(var_dir, "flower_auth", new_flower_auth)
    return os.environ.get("SECRET_KEY") or secret_key, os.environ.get("FLOWER_BASIC_AUTH") or kept


def _exit_code(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode


def cmd_run(argv: list[str]) -> int:
    """Run CMD with the embedded servers; DATABASE_URL / REDIS_URL given by the user win."""
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        print("usage: python -m app.embedded run -- CMD [ARG...]", file=sys.stderr)
        return 2
    var_dir = default_var_dir()
    want_pg = not os.environ.get("DATABASE_URL")
    want_redis = not os.environ.get("REDIS_URL")

    child: subprocess.Popen[bytes] | None = None
    pending: list[int] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        # The child runs in its own process group, so a signal reaches it only through us,
        # and we stay alive to stop the servers after it has exited.
        if child is None:
            pending.append(signum)
            raise KeyboardInterrupt
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signum)

    for sig in _FORWARDED:
        signal.signal(sig, on_signal)

    started = None
    try:
        started = start_servers(var_dir, postgres=want_pg, redis=want_redis)
        secret_key, flower_auth = _kept_secrets(var_dir)
        env = dict(os.environ)
        env.setdefault("BATCHQ_VAR_DIR", str(var_dir))
        # What it starts sees a DATABASE_URL, which alone would demand a SECRET_KEY (a deployment's rule):
        # `make run` is not a deployment, and hands over the key it keeps in var/secret_key.
        env["SECRET_KEY"] = secret_key
        env["FLOWER_BASIC_AUTH"] = flower_auth
        if want_pg:
            env["DATABASE_URL"] = started.urls.database_url
            _say(f"PostgreSQL  {started.urls.database_url}  (embedded, data in {var_dir / 'postgres'})")
        else:
            _say("PostgreSQL  DATABASE_URL from the environment")
        if want_redis:
            env["REDIS_URL"] = started.urls.redis_url
            _say(f"Redis       {started.urls.redis_url}  (embedded, data in {var_dir / 'redis'})")
        else:
            _say("Redis       REDIS_URL from the environment")
        user, _, password = flower_auth.partition(":")
        flower_port = os.environ.get("FLOWER_PORT") or "5555"
        _say(f"Flower      http://127.0.0.1:{flower_port}/  user {user}  password {password}")
        _say(f"Web         http://127.0.0.1:{os.environ.get('PORT') or '8000'}/")
        _say("Sign-in     first admin: .venv/bin/flask --app wsgi user create NAME --role admin  (asks a password)")
        if pending:
            return 130
        try:
            child = subprocess.Popen(argv, env=env, process_group=0)
        except OSError as exc:
            print(f"batchq: cannot run {argv[0]!r}: {exc}", file=sys.stderr)
            return 127
        return _exit_code(child.wait())
    except KeyboardInterrupt:
        return 130
    except EmbeddedError as exc:
        print(f"batchq: {exc}", file=sys.stderr)
        return 1
    finally:
        if child is not None and child.poll() is None:  # we are unwinding with the child alive
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGTERM)
            child.wait()
        for sig in _FORWARDED:
            signal.signal(sig, signal.SIG_IGN)  # let the shutdown finish; it takes a second
        if started is not None and (started.started_postgres or started.started_redis):
            _say("stopping the embedded servers")
            stop_servers(var_dir, postgres=started.started_postgres, redis=started.started_redis)


def cmd_up() -> int:
    """Start both servers (or find them running) and print their URLs as env lines."""
    var_dir = default_var_dir()
    try:
        urls = start_servers(var_dir).urls
    except EmbeddedError as exc:
        print(f"batchq: {exc}", file=sys.stderr)
        return 1
    _kept_secrets(var_dir)
    # Only make run's own start lines show the passwords; flask commands read them from embedded.json.
    print(f"DATABASE_URL={redacted(urls.database_url)}")
    print(f"REDIS_URL={redacted(urls.redis_url)}")
    return 0


def cmd_down() -> int:
    """Stop both servers of the var directory."""
    stop(default_var_dir())
    return 0


def cmd_status() -> int:
    """Print what runs; exit 0 when both servers do."""
    found = status(default_var_dir())
    print(f"var dir     {found['var_dir']}")
    for name in ("postgres", "redis"):
        info = found[name]
        if isinstance(info, dict):
            print(f"{name:<11} running  pid {info['pid']}  {info['url']}")
        else:
            print(f"{name:<11} stopped")
    return 0 if found["postgres"] and found["redis"] else 1


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    command = args[0] if args else ""
    if command == "run":
        return cmd_run(args[1:])
    if command == "up" and len(args) == 1:
        return cmd_up()
    if command == "down" and len(args) == 1:
        return cmd_down()
    if command == "status" and len(args) == 1:
        return cmd_status()
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
