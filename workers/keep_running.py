"""Run a command, and start it again when it dies on its own: the Procfile's worker line.

honcho stops every process of the Procfile as soon as one ends, so a worker
that crashed or was killed took the web server, beat and Flower down with it,
and nobody could see the pages say why nothing moved. Wrapped in this, a dead
worker is reported and started again after a pause, while the rest stays up
and the pages show "No worker is running" meanwhile. Asked to stop (SIGTERM or
SIGINT, as honcho, systemd or Ctrl-C do), it passes the signal on and ends with
the command: a stop is never answered by a restart.

    python -m workers.keep_running COMMAND [ARGS...]
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from types import FrameType

from app.logging_setup import json_line

# A pause before each restart, so a command that fails at once does not spin.
RESTART_DELAY_SECONDS = 10.0
# A stop the command did not get itself is passed on after this long: longer than
# the worker's graceful stop (its 3 s soft shutdown), which a second signal would cut short.
PASS_ON_AFTER_SECONDS = 10.0


class KeepRunning:
    """The command's one supervisor: restarts it after deaths, never after a stop."""

    def __init__(self, command: list[str]) -> None:
        self.command = command
        self.stopping = False
        self.stopped_at: float | None = None
        self.stop_signal: int = signal.SIGTERM
        self.passed_on = False
        self.child: subprocess.Popen[bytes] | None = None

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._stop)
        while True:
            self.child = subprocess.Popen(self.command)
            code = self._wait_for_child()
            if self.stopping:
                return code
            again = f"starting it again in {RESTART_DELAY_SECONDS:g} s"
            _report(f"keep_running: {self.command[0]} ended ({_how(code)}); {again}")
            deadline = time.monotonic() + RESTART_DELAY_SECONDS
            while not self.stopping and time.monotonic() < deadline:
                time.sleep(0.2)
            if self.stopping:
                return code

    def _wait_for_child(self) -> int:
        """Wait for the command to end; pass a stop on to it if it did not get one itself.

        honcho and systemd signal the whole process group, the command too: a
        second signal would turn Celery's graceful stop into an immediate one.
        So the signal is passed on only when the command is still there well
        after it (`kill` of this process alone).
        """
        assert self.child is not None
        while True:
            try:
                return self.child.wait(timeout=0.2)
            except subprocess.TimeoutExpired:
                pass
            if (
                self.stopped_at is not None
                and not self.passed_on
                and time.monotonic() - self.stopped_at > PASS_ON_AFTER_SECONDS
            ):
                self.passed_on = True
                self.child.send_signal(self.stop_signal)

    def _stop(self, signum: int, _frame: FrameType | None) -> None:
        self.stopping = True
        self.stop_signal = signum
        if self.stopped_at is None:
            self.stopped_at = time.monotonic()


def _report(message: str) -> None:
    # Beside the worker's own lines: JSON with them under LOG_FORMAT=json (a bad value: the worker refuses it).
    if os.environ.get("LOG_FORMAT", "").strip().lower() == "json":
        sys.stderr.write(json_line(__name__, logging.WARNING, message))
        sys.stderr.flush()
    else:
        print(message, file=sys.stderr, flush=True)


def _how(code: int) -> str:
    return f"killed by signal {-code}" if code < 0 else f"exit code {code}"


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit("usage: python -m workers.keep_running COMMAND [ARGS...]")
    sys.exit(KeepRunning(sys.argv[1:]).run())


if __name__ == "__main__":
    main()
