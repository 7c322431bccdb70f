"""Celery worker, beat and web subprocesses, started as the Procfile starts them: one launcher for the
benchmarks and the fault tests.

Each process gets a session (process group) of its own, so that the whole
group, pool children included, can be signalled at once, as a supervisor
would; its output goes to a log file, or nowhere.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CELERY_APP = "workers.celery_app"


def start_worker(
    env: dict[str, str],
    *options: str,
    app: str = CELERY_APP,
    queues: str = "batches,control",
    concurrency: int = 3,
    loglevel: str = "INFO",
    log: Path | None = None,
    cwd: Path = ROOT,
) -> subprocess.Popen[bytes]:
    """A prefork `celery worker` on these queues; `options` are more of its command-line options.

    Started elsewhere than the checkout (`cwd`), the environment must name the
    code's directory in PYTHONPATH, as a deployment's unit file would.
    """
    command = ["worker", f"--loglevel={loglevel}", "-Q", queues, f"--concurrency={concurrency}", *options]
    return _spawn(_celery(app, command), env, log, cwd)


def start_beat(
    env: dict[str, str],
    schedule: Path,
    app: str = CELERY_APP,
    loglevel: str = "WARNING",
    log: Path | None = None,
    cwd: Path = ROOT,
) -> subprocess.Popen[bytes]:
    """`celery beat`, keeping its schedule in `schedule`."""
    return _spawn(_celery(app, ["beat", f"--loglevel={loglevel}", f"--schedule={schedule}"]), env, log, cwd)


def start_web(env: dict[str, str], log: Path | None = None, cwd: Path = ROOT) -> subprocess.Popen[bytes]:
    """The Procfile's web line (gunicorn, gunicorn.conf.py; PORT, WEB_WORKERS ... from `env`), from any directory."""
    argv = [sys.executable, "-m", "gunicorn", "--config", str(ROOT / "gunicorn.conf.py"), "wsgi:app"]
    return _spawn(argv, env, log, cwd)


def _celery(app: str, command: list[str]) -> list[str]:
    return [sys.executable, "-m", "celery", "-A", app, *command]


def _spawn(argv: list[str], env: dict[str, str], log: Path | None, cwd: Path) -> subprocess.Popen[bytes]:
    # A session of its own either way: stop() and kill() signal the whole group.
    if log is None:
        return subprocess.Popen(
            argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
    with log.open("wb") as out:
        return subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def stop(process: subprocess.Popen[bytes] | None, timeout: float = 8) -> None:
    """End the process's whole group: SIGTERM, then SIGKILL of what is left after `timeout` seconds.

    Waiting for the group leader alone is not enough: a `sh -c` leader dies at
    once while the worker it started is still shutting down (and one whose
    broker has just gone may never finish), writing heartbeats and running
    repairs against the shared database long after the caller moved on.
    """
    if process is None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=timeout)
    while group_alive(process.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if group_alive(process.pid):
        kill(process)


def kill(process: subprocess.Popen[bytes] | None, timeout: float = 10) -> None:
    """SIGKILL the process's whole group (no chance to clean up), and wait until none of it is left."""
    if process is None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=timeout)
    deadline = time.monotonic() + timeout
    while group_alive(process.pid) and time.monotonic() < deadline:
        time.sleep(0.05)


def group_alive(pgid: int) -> bool:
    """Whether a live (not zombie) process of the group is left, the leader's descendants included."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # it ended while we looked
            continue
        # After the name: state, ppid, pgrp.
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False
