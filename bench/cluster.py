"""Several hosts on one queue: per host a worker, a web server and beat, all on one database and one broker.

A host here is a directory of its own (its working directory, METRICS_DIR and
BATCHQ_VAR_DIR, and its processes' logs) and a node name of its own
(`celery@host-a`): what tells two machines apart to the service. Each process
runs as the Procfile starts it, in a process group of its own, with the code
found through PYTHONPATH as a deployment's unit file would find it: none of
them starts in the checkout nor needs its ./var/. A host's worker can be
SIGKILLed, whole group at once, and started again, as a supervisor would.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests
from celery import Celery

from bench import processes

READY_SECONDS = 120.0  # a loaded 2-core machine starts six processes slowly


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Host:
    """One machine's share of the service: its directory, its node name, its processes."""

    name: str
    directory: Path
    env: dict[str, str]
    port: int
    worker: subprocess.Popen[bytes] | None = None
    web: subprocess.Popen[bytes] | None = None
    beat: subprocess.Popen[bytes] | None = None
    workers_started: int = 0
    kills: list[float] = field(default_factory=list)

    @property
    def node(self) -> str:
        return f"celery@{self.name}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self, process: str) -> Path:
        return self.directory / f"{process}.log"

    def start_worker(self) -> None:
        self.workers_started += 1
        log = self.log(f"worker-{self.workers_started}")
        # The Procfile's worker line: -E, the two queues, prefork with 3 children.
        self.worker = processes.start_worker(self.env, "-E", "-n", self.node, log=log, cwd=self.directory)

    def start(self) -> None:
        self.web = processes.start_web(self.env, log=self.log("web"), cwd=self.directory)
        self.beat = processes.start_beat(
            self.env, self.directory / "beat-schedule", log=self.log("beat"), cwd=self.directory
        )
        self.start_worker()

    def kill_worker(self) -> float:
        """SIGKILL the worker's whole process group (main process and pool children); the time of the signal."""
        assert self.worker is not None
        killed_at = time.time()
        processes.kill(self.worker)
        self.kills.append(killed_at)
        return killed_at

    def dead(self) -> list[str]:
        """Which of its processes exited on their own, with where to read why."""
        found = []
        for kind, process, log in (
            ("worker", self.worker, self.log(f"worker-{self.workers_started}")),
            ("web", self.web, self.log("web")),
            ("beat", self.beat, self.log("beat")),
        ):
            if process is not None and process.poll() is not None:
                found.append(f"{self.name}'s {kind} exited with {process.returncode}; see {log}")
        return found

    def processes(self) -> list[subprocess.Popen[bytes] | None]:
        return [self.worker, self.web, self.beat]


class Cluster:
    """Hosts A and B (or more) over the same DATABASE_URL and broker, given in `env`."""

    def __init__(self, env: dict[str, str], root: Path, names: tuple[str, ...] = ("host-a", "host-b")) -> None:
        self.root = root
        self.broker_url = env.get("CELERY_BROKER_URL") or env["REDIS_URL"]
        self.hosts = [self._host(env, name) for name in names]

    def _host(self, env: dict[str, str], name: str) -> Host:
        directory = self.root / name
        directory.mkdir(parents=True, exist_ok=True)
        port = free_port()
        own = {
            "PORT": str(port),
            "WEB_WORKERS": "1",
            "METRICS_DIR": str(directory / "metrics"),
            "BATCHQ_VAR_DIR": str(directory / "var"),  # must stay unused: every secret and server is given
            "PYTHONPATH": str(processes.ROOT),
            "REMAP_SIGTERM": "SIGQUIT",  # as the Procfile's worker line
            # One token submits every batch, faster than a person would: not what the limit is for.
            "RATE_LIMIT_API": env.get("RATE_LIMIT_API") or "100000/minute",
        }
        return Host(name, directory, {**env, **own}, port)

    def start(self) -> None:
        """Start every host's web, beat and worker; return once every web answers and every worker pings."""
        for host in self.hosts:
            host.start()
        deadline = time.monotonic() + READY_SECONDS
        while not (self._webs_answer() and self.workers_answer()):
            self.check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError(f"the hosts did not come up within {READY_SECONDS:g} s; logs in {self.root}")
            time.sleep(0.2)

    def _webs_answer(self) -> bool:
        for host in self.hosts:
            try:
                if requests.get(host.url + "/api/v1/health", timeout=5).status_code != 200:
                    return False
            except requests.RequestException:  # not listening yet, or still loading the app
                return False
        return True

    def workers_answer(self) -> bool:
        """Whether every host's worker answers a ping on the broker."""
        probe = Celery(broker=self.broker_url, set_as_current=False)
        try:
            replies = probe.control.ping(timeout=0.5) or []
        finally:
            probe.close()
        answered = {name for reply in replies for name in reply}
        return all(host.node in answered for host in self.hosts)

    def host_of(self, node: str | None) -> Host | None:
        return next((host for host in self.hosts if host.node == node), None)

    def check_alive(self) -> None:
        dead = [line for host in self.hosts for line in host.dead()]
        if dead:
            raise RuntimeError("; ".join(dead))

    def stop(self) -> None:
        """End every process group (SIGTERM, then SIGKILL of what is left), all of them at once."""
        running = [process for host in self.hosts for process in host.processes() if process is not None]
        for process in running:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        for process in running:
            processes.stop(process, timeout=15)

    def kill_leftovers(self) -> None:
        """Last resort (a crash, Ctrl-C, a failed test): SIGKILL whatever is left of every group."""
        for host in self.hosts:
            for process in host.processes():
                processes.kill(process)
