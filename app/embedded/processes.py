"""The server processes: whether a pid still runs, waiting for it to exit, and stopping it,
including a server left behind by a crash whose pid file would block the next start."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

START_TIMEOUT = 60.0
STOP_TIMEOUT = 60.0

# redis-server runs as our child (not daemonized, so a failed start is seen at once); keeping its
# Popen lets us reap it when it stops instead of leaving a zombie behind.
_children: dict[int, subprocess.Popen[bytes]] = {}


def adopt(proc: subprocess.Popen[bytes]) -> None:
    """Keep the Popen of a server started as our child, so `pid_alive` reaps it once it exits."""
    _children[proc.pid] = proc


def pid_alive(pid: int) -> bool:
    """True if `pid` runs; a zombie counts as dead (PID 1 of a container may never reap it)."""
    if pid <= 0:
        return False
    child = _children.get(pid)
    if child is not None:
        if child.poll() is None:
            return True
        del _children[pid]
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else (PostgreSQL's own user)
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return not sys.platform.startswith("linux")  # Linux: it just exited; elsewhere: no /proc
    except OSError:
        return True
    state = raw.rpartition(")")[2].split()
    return not state or state[0] not in ("Z", "X")


def wait_pid_gone(pid: int, timeout: float) -> bool:
    """Wait up to `timeout` seconds for `pid` to exit; True if it did."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.02)
    return not pid_alive(pid)


def signal_quietly(pid: int, sig: signal.Signals) -> None:
    """Send `sig` to `pid`; a process that has already exited needs nothing more."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def wait_or_force(pid: int, timeout: float, sig: signal.Signals, grace: float) -> None:
    """Wait `timeout` for `pid` to exit; if it has not, send the harsher `sig` and wait `grace` more."""
    if not wait_pid_gone(pid, timeout):
        signal_quietly(pid, sig)
        wait_pid_gone(pid, grace)


def clear_stale_pid_file(pid_file: Path, looks_ours: Callable[[list[bytes]], bool], sig: signal.Signals) -> None:
    """Remove the pid file of a server that no longer answers, first stopping it with `sig` if it
    still runs and `looks_ours` recognises its command line.

    A server refuses to start over a pid file whose pid is alive, and after a crash or a reboot
    that pid may belong to an unrelated process that must be left alone.
    """
    with contextlib.suppress(OSError, ValueError, IndexError):
        pid = int(pid_file.read_text().splitlines()[0])
        if pid_alive(pid):
            args = _command_line(pid)
            if args is not None and looks_ours(args):
                os.kill(pid, sig)
                wait_pid_gone(pid, 10)
    pid_file.unlink(missing_ok=True)


def _command_line(pid: int) -> list[bytes] | None:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
