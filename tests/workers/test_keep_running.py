"""workers.keep_running: a command that dies is started again; a stop is passed on and never restarted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import wait_for

ROOT = Path(__file__).resolve().parents[2]

# The supervised command: appends its pid to a file, then sleeps until it is signalled.
CHILD = "import os, sys, time; open(sys.argv[1], 'a').write(f'{os.getpid()}\\n'); time.sleep(600)"


def _start(tmp_path: Path, restart_delay: str = "0.3") -> tuple[subprocess.Popen[bytes], Path]:
    pids = tmp_path / "pids"
    code = (
        "import sys, workers.keep_running as k;"
        f" k.RESTART_DELAY_SECONDS = {restart_delay}; k.PASS_ON_AFTER_SECONDS = 1.0;"
        " sys.argv = ['keep_running', *sys.argv[1:]]; k.main()"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code, sys.executable, "-c", CHILD, str(pids)],
        cwd=ROOT,
        start_new_session=True,  # a process group of its own, as honcho gives each Procfile line
    )
    return process, pids


def _pids(path: Path) -> list[int]:
    return [int(line) for line in path.read_text().split()] if path.exists() else []


def test_a_command_killed_on_its_own_is_started_again(tmp_path: Path) -> None:
    process, pids = _start(tmp_path)
    try:
        first = wait_for(lambda: _pids(pids), timeout=10)[0]
        os.kill(first, signal.SIGKILL)  # killed by hand, as an operator or the OOM killer would
        second = wait_for(lambda: _pids(pids)[1:], timeout=10)[0]
        assert second != first and process.poll() is None
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=10)


def test_a_stop_of_the_whole_group_ends_it_without_a_restart(tmp_path: Path) -> None:
    process, pids = _start(tmp_path)
    wait_for(lambda: _pids(pids), timeout=10)
    os.killpg(process.pid, signal.SIGTERM)  # honcho's Ctrl-C, systemd's stop
    assert process.wait(timeout=10) != 0
    assert len(_pids(pids)) == 1


def test_a_stop_of_the_supervisor_alone_is_passed_on_to_the_command(tmp_path: Path) -> None:
    process, pids = _start(tmp_path)
    child = wait_for(lambda: _pids(pids), timeout=10)[0]
    began = time.monotonic()
    process.send_signal(signal.SIGTERM)  # `kill PID` of the supervisor only
    process.wait(timeout=10)
    assert time.monotonic() - began < 5
    wait_for(lambda: not os.path.exists(f"/proc/{child}") or _zombie(child), timeout=15)
    assert len(_pids(pids)) == 1


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True


def test_a_restart_is_reported_as_a_json_line_under_log_format_json(tmp_path: Path) -> None:
    import json

    pids = tmp_path / "pids"
    code = (
        "import sys, workers.keep_running as k; k.RESTART_DELAY_SECONDS = 0.3;"
        " sys.argv = ['keep_running', *sys.argv[1:]]; k.main()"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code, sys.executable, "-c", CHILD, str(pids)],
        cwd=ROOT,
        env={**os.environ, "LOG_FORMAT": "json"},
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        os.kill(wait_for(lambda: _pids(pids), timeout=10)[0], signal.SIGKILL)
        assert process.stderr is not None
        line = json.loads(process.stderr.readline())
        assert line["logger"] == "workers.keep_running" and line["level"] == "WARNING"
        assert "ended (killed by signal 9); starting it again" in line["message"]
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=10)
