"""Peak memory of the service's processes during `make bench`: web, worker main process, pool children.

Runs beside the benchmarks (the Makefile starts it first and stops it with
SIGTERM after the last one) and reads every process's resident set size from
/proc twice a second. The service's processes are told apart by their command
line: gunicorn (web), `celery ... worker` of workers.celery_app (the main
process, and its pool children: the processes whose parent is one), beat. The
benchmarks' own baselines (a bare Celery app, a bare WSGI app: `bench.` in the
command line) are not the service and are left out. On SIGTERM it records each
role's peak (bench/results.py) and prints them.

Targets (issue: fast at every size): a web process under 150 MB, a worker's
main process and each pool child under 200 MB.

    python -m bench.memory [--every 0.5]
"""

from __future__ import annotations

import argparse
import os
import signal
import threading
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from bench.results import record

TARGET_MB = {"web process": 150.0, "worker main process": 200.0, "worker pool child": 200.0, "beat": 200.0}


@dataclass
class Peaks:
    """Each role's highest RSS seen, in MB, and how many processes of it were seen."""

    mb: dict[str, float] = field(default_factory=dict)
    pids: dict[str, set[int]] = field(default_factory=dict)

    def see(self, role: str, pid: int, rss_mb: float) -> None:
        self.mb[role] = max(self.mb.get(role, 0.0), rss_mb)
        self.pids.setdefault(role, set()).add(pid)


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:  # the process ended while we looked
        return None


def _processes() -> dict[int, tuple[int, str, float]]:
    """pid -> (parent pid, command line, RSS in MB) of every process visible now."""
    found: dict[int, tuple[int, str, float]] = {}
    for proc in Path("/proc").glob("[0-9]*"):
        cmdline = _read(proc / "cmdline")
        status = _read(proc / "status")
        if not cmdline or not status:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if "VmRSS" not in fields:  # a kernel thread, or a zombie
            continue
        rss_mb = int(fields["VmRSS"].split()[0]) / 1024
        found[int(proc.name)] = (int(fields["PPid"]), cmdline.replace("\0", " "), rss_mb)
    return found


def role_of(command: str) -> str | None:
    """The service role a command line belongs to, or None (not the service, or a benchmark's baseline app)."""
    words = command.split()
    if any("gunicorn" in word for word in words[:3]):
        apps = [word for word in words if word.endswith(":app")]
        return None if any(app.startswith("bench.") for app in apps) else "web process"
    if "celery" in command and "-A" in words:
        app = words[words.index("-A") + 1] if words.index("-A") + 1 < len(words) else ""
        if app != "workers.celery_app":
            return None
        if "worker" in words:
            return "worker"
        if "beat" in words:
            return "beat"
    return None


def _descendants(processes: dict[int, tuple[int, str, float]], root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in processes.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def sample(peaks: Peaks, root: int) -> None:
    """Note the RSS of the service's processes among `root`'s descendants (the run's, not the machine's)."""
    processes = _processes()
    for pid in _descendants(processes, root):
        ppid, command, rss_mb = processes[pid]
        role = role_of(command)
        if role == "worker":
            parent = processes.get(ppid)
            role = "worker pool child" if parent and role_of(parent[1]) == "worker" else "worker main process"
        if role is not None:
            peaks.see(role, pid, rss_mb)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--every", type=float, default=0.5, help="seconds between samples")
    args = parser.parse_args()
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    peaks = Peaks()
    root = os.getppid()  # the shell that runs the benchmarks: their processes are its descendants
    while not stop.wait(args.every):
        sample(peaks, root)
    print("== bench.memory (peak RSS over the whole run)")
    for role, target in TARGET_MB.items():
        if role not in peaks.mb:
            continue
        peak = peaks.mb[role]
        print(f"  {role:22} {peak:7.1f} MB over {len(peaks.pids[role]):4d} processes   target: under {target:g} MB")
        record("memory", f"peak RSS, {role}", peak, "MB", target=f"< {target:g} MB", met=peak < target)


if __name__ == "__main__":
    main()
