"""Celery worker and beat subprocesses, started as the Procfile starts them: one launcher for the benchmarks
and the fault tests.

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
) -> subprocess.Popen[bytes]:
    """A prefork `celery worker` on these queues; `options` are more of its command-line options."""
    command = ["worker", f"--loglevel={loglevel}", "-Q", queues, f"--concurrency={concurrency}", *options]
    return _spawn(app, command, env, log)


def start_beat(
    env: dict[str, str], schedule: Path, app: str = CELERY_APP, loglevel: str = "WARNING", log: Path | None = None
) -> subprocess.Popen[bytes]:
    """`celery beat`, keeping its schedule in `schedule`."""
    return _spawn(app, ["beat", f"--loglevel={loglevel}", f"--schedule={schedule}"], env, log)


def _spawn(app: str, command: list[str], env: dict[str, str], log: Path | None) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "celery", "-A", app, *command]
    if log is None:
        return subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with log.open("wb") as out:
        return subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def stop(process: subprocess.Popen[bytes] | None, timeout: float = 8) -> None:
    """End the process's whole group: SIGTERM, then SIGKILL if it is still there after `timeout` seconds."""
    if process is None or process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill(process)
    except ProcessLookupError:
        pass


def kill(process: subprocess.Popen[bytes] | None, timeout: float = 10) -> None:
    """SIGKILL the process's whole group (no chance to clean up), and wait for it."""
    if process is None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=timeout)
