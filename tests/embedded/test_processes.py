"""Stale pid files: a leftover server of ours is stopped, an unrelated process that reused the pid is not."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.embedded.processes import adopt, clear_stale_pid_file, pid_alive
from tests.conftest import wait_for


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(["sleep", "60"])
    adopt(proc)
    # Popen returns while exec may still be finishing: wait until /proc shows the new command line,
    # as it always does for the long-running server a stale pid file points at.
    cmdline = Path(f"/proc/{proc.pid}/cmdline")
    wait_for(lambda: cmdline.read_bytes().startswith(b"sleep"), timeout=15, interval=0.01)
    yield proc
    proc.kill()
    proc.wait()


def test_clear_stale_pid_file_stops_a_process_of_ours(tmp_path: Path, sleeper: subprocess.Popen[bytes]) -> None:
    pid_file = tmp_path / "server.pid"
    pid_file.write_text(f"{sleeper.pid}\n")
    clear_stale_pid_file(pid_file, lambda args: args[0].endswith(b"sleep"), signal.SIGTERM)
    assert not pid_file.exists()
    assert not pid_alive(sleeper.pid)


def test_clear_stale_pid_file_leaves_an_unrelated_process_alone(
    tmp_path: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    pid_file = tmp_path / "server.pid"
    pid_file.write_text(f"{sleeper.pid}\n")
    clear_stale_pid_file(pid_file, lambda args: b"redis-server" in b"\0".join(args), signal.SIGTERM)
    assert not pid_file.exists()
    assert pid_alive(sleeper.pid)


def test_clear_stale_pid_file_drops_an_unreadable_file(tmp_path: Path) -> None:
    pid_file = tmp_path / "server.pid"
    pid_file.write_text("not a pid\n")
    clear_stale_pid_file(pid_file, lambda _args: True, signal.SIGTERM)
    assert not pid_file.exists()
