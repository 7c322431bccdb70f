"""The Procfile's processes in a deployment: no SECRET_KEY is refused by name, beat needs no ./var/,
Flower starts only behind authentication and on 127.0.0.1 unless told otherwise."""

from __future__ import annotations

import os
import re
import shlex
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from flask import Flask

from app.config import Settings
from bench import processes
from tests.conftest import RedisServer, wait_for
from workers.flower import refusal

ROOT = Path(__file__).resolve().parents[2]
PROCFILE = dict(line.split(": ", 1) for line in (ROOT / "Procfile").read_text().splitlines() if line.strip())


def deployment_env(settings: Settings, tmp_path: Path, **extra: str) -> dict[str, str]:
    """A deployment's variables: the servers named, no SECRET_KEY, no var directory to fall back on."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("SECRET_KEY", "FLOWER_"))}
    return {
        **env,
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": settings.redis_url,
        "BATCHQ_VAR_DIR": str(tmp_path / "var"),
        "BATCHQ_EVENTS_CHANNEL": settings.events_channel,
        "RECONCILE_INTERVAL": "3600",  # no repair rounds on the session's database
        "PYTHONPATH": str(ROOT),
        **extra,
    }


def procfile_argv(name: str) -> list[str]:
    """A Procfile line as its words, its checkout paths made absolute so that it runs from any directory."""
    line = PROCFILE[name].replace(".venv/bin/", f"{ROOT}/.venv/bin/")
    line = line.replace(" gunicorn.conf.py ", f" {ROOT}/gunicorn.conf.py ")
    # `exec` the command itself, so that the shell is not left as its parent (a line that sets a
    # variable first, as the worker's does, can't be exec'd: stop() ends its whole group instead).
    return ["sh", "-c", line if "=" in line.split()[0] else "exec " + line]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize(
    "argv",
    [
        [sys.executable, "-c", "import wsgi"],  # what gunicorn's workers import
        [f"{ROOT}/.venv/bin/celery", "-A", "workers.celery_app", "worker", "--pool=solo"],
        [f"{ROOT}/.venv/bin/celery", "-A", "workers.celery_app", "beat"],
        [sys.executable, "-m", "flask", "--app", "wsgi", "db", "upgrade"],
    ],
    ids=["web", "worker", "beat", "flask-db-upgrade"],
)
def test_start_without_secret_key_fails_naming_it(settings: Settings, tmp_path: Path, argv: list[str]) -> None:
    done = subprocess.run(argv, cwd=ROOT, env=deployment_env(settings, tmp_path), capture_output=True, timeout=120)
    assert done.returncode != 0
    assert b"SECRET_KEY is not set" in done.stdout + done.stderr
    assert not (tmp_path / "var").exists()  # no key was generated behind the deployment's back


def test_beat_runs_from_a_directory_without_var(settings: Settings, tmp_path: Path) -> None:
    """The Procfile's beat, started where there is no ./var/, sets its schedule up and ticks."""
    argv = procfile_argv("beat")
    argv[-1] = argv[-1].replace("--loglevel=WARNING", "--loglevel=DEBUG")
    log = tmp_path / "beat.log"
    env = deployment_env(settings, tmp_path, SECRET_KEY="beat-test")
    with log.open("wb") as out:
        process = subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:

        def ticking() -> bool:
            assert process.poll() is None, log.read_text()[-3000:]
            return "Ticking with max interval" in log.read_text()

        wait_for(ticking, timeout=60, interval=0.1)
        assert not (tmp_path / "var").exists()
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.mark.parametrize(
    ("name", "ready"),
    [
        ("web", "Booting worker with pid"),  # gunicorn's worker has loaded the app
        ("worker", f"@{socket.gethostname()} ready."),  # Celery's "name@host ready." once it consumes
    ],
)
def test_web_and_worker_start_from_a_directory_without_var(
    app: Flask, settings: Settings, tmp_path: Path, own_redis: RedisServer, name: str, ready: str
) -> None:
    """A deployment host: the Procfile's line, the contract's variables only, started in an empty directory.

    It comes up, and writes nothing into that directory: no ./var/, no files of its own.
    """
    workdir = tmp_path / "workdir"
    workdir.mkdir()
    port = free_port()
    env = deployment_env(
        settings,
        tmp_path,
        SECRET_KEY="start-anywhere",
        PORT=str(port),
        WEB_WORKERS="1",
        WORKER_CONCURRENCY="1",
        REDIS_URL=own_redis.url,  # its unprefixed queues meet no one's messages, nor others its
    )
    argv = procfile_argv(name)
    if name == "worker":
        argv[-1] += f" -n anywhere-{uuid.uuid4().hex[:8]}@%h"
    log = tmp_path / f"{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            argv, cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:

        def up() -> bool:
            assert process.poll() is None, log.read_text()[-3000:]
            return ready in log.read_text()

        wait_for(up, timeout=90, interval=0.1)
        if name == "web":
            health = f"http://127.0.0.1:{port}/api/v1/health"  # 503 while no worker runs: it answers all the same
            wait_for(lambda: requests.get(health, timeout=5).status_code in (200, 503), timeout=30)
        assert list(workdir.iterdir()) == []
        assert not (tmp_path / "var").exists()
    finally:
        processes.stop(process, timeout=30)


@pytest.mark.parametrize(
    ("env", "refused"),
    [
        ({}, "FLOWER_BASIC_AUTH is not set"),
        ({"FLOWER_BASIC_AUTH": " "}, "FLOWER_BASIC_AUTH is not set"),
        ({"FLOWER_BASIC_AUTH": "admin"}, "user:password"),
        ({"FLOWER_BASIC_AUTH": "admin:"}, "user:password"),
        ({"FLOWER_BASIC_AUTH": ":secret"}, "user:password"),
        ({"FLOWER_BASIC_AUTH": "a:b,c"}, "user:password"),
        ({"FLOWER_AUTH_PROVIDER": "flower.views.auth.GithubLoginHandler"}, "FLOWER_BASIC_AUTH is not set"),
        ({"FLOWER_BASIC_AUTH": "admin:s3cret"}, None),
        ({"FLOWER_BASIC_AUTH": "a:b,c:d"}, None),
        ({"FLOWER_AUTH_PROVIDER": "flower.views.auth.GithubLoginHandler", "FLOWER_AUTH": ".*@example.com"}, None),
    ],
)
def test_flower_refuses_to_start_without_credentials(env: dict[str, str], refused: str | None) -> None:
    problem = refusal(env)
    assert (problem is None) if refused is None else (problem is not None and refused in problem)


def test_flower_procfile_line_refuses_at_once_naming_the_variable(settings: Settings, tmp_path: Path) -> None:
    done = subprocess.run(
        procfile_argv("flower"), cwd=ROOT, env=deployment_env(settings, tmp_path), capture_output=True, timeout=60
    )
    assert done.returncode == 2
    assert b"FLOWER_BASIC_AUTH is not set" in done.stderr


def listening_addresses(port: int) -> set[str]:
    """The local addresses with a socket listening on `port` (IPv4, from /proc/net/tcp)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, _, hex_port = local.partition(":")
        if state == "0A" and int(hex_port, 16) == port:
            found.add(socket.inet_ntoa(bytes.fromhex(address)[::-1]))
    return found


@pytest.fixture
def flower(settings: Settings, tmp_path: Path) -> Iterator[tuple[str, int]]:
    port = free_port()
    env = deployment_env(settings, tmp_path, SECRET_KEY="flower-test", FLOWER_PORT=str(port))
    env["FLOWER_BASIC_AUTH"] = "ops:flower-test-password"
    log = tmp_path / "flower.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            procfile_argv("flower"), cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}/"

    def answers() -> bool:
        assert process.poll() is None, log.read_text()[-3000:]
        try:
            return requests.get(url, timeout=2).status_code > 0
        except requests.ConnectionError:
            return False

    try:
        wait_for(answers, timeout=90, interval=0.2)
        yield url, port
    finally:
        processes.stop(process, timeout=30)


def test_flower_asks_for_its_password_and_listens_on_loopback_only(flower: tuple[str, int]) -> None:
    url, port = flower
    assert requests.get(url, timeout=10).status_code == 401
    assert requests.get(url, auth=("ops", "wrong"), timeout=10).status_code == 401
    assert requests.get(url, auth=("ops", "flower-test-password"), timeout=10).status_code == 200
    assert listening_addresses(port) == {"127.0.0.1"}


def test_flower_address_comes_from_flower_address() -> None:
    words = shlex.split(PROCFILE["flower"])
    assert "--address=${FLOWER_ADDRESS:-127.0.0.1}" in words
    assert not re.search(r"basic.auth", PROCFILE["flower"], re.IGNORECASE)  # never on the command line (ps)


def test_flower_keeps_its_own_metrics_out_of_the_hosts(flower: tuple[str, int]) -> None:
    """Flower loads the app (multiprocess mode on); its flower_* values go to a subdirectory the web does not read."""
    from app import metrics
    from app.metrics.collector import HostCollector

    url, _ = flower
    assert requests.get(url + "metrics", auth=("ops", "flower-test-password"), timeout=10).status_code == 200
    own = metrics.METRICS_DIR / "flower"
    wait_for(lambda: any(own.glob("*.db")), timeout=30)
    # Read as the web reads: another process's file may be only begun (0 bytes) at this moment.
    host = {family.name for family in HostCollector(None, path=str(metrics.METRICS_DIR)).collect()}
    assert not any(name.startswith("flower_") for name in host)
