"""The real web server (gunicorn with gevent workers): streams don't starve pages, stops are quick."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from flask import Flask

from app.config import Settings
from app.services import events
from tests.browser.conftest import PASSWORD

ROOT = Path(__file__).resolve().parents[2]
STREAMS = 24


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def gunicorn(settings: Settings, user: str, tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes], Path]]:
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": settings.redis_url,
        "CELERY_BROKER_URL": settings.broker_url,
        "SECRET_KEY": "gunicorn-test",
        "BATCHQ_EVENTS_CHANNEL": settings.events_channel,
        "PORT": str(port),
        "WEB_WORKERS": "2",
    }
    log = tmp_path / "gunicorn.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--config", "gunicorn.conf.py", "--access-logfile", "/dev/null", "wsgi:app"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if requests.get(f"{url}/login", timeout=5).status_code == 200:
                break
        except requests.RequestException:
            time.sleep(0.1)
    else:  # pragma: no cover - diagnostics
        process.kill()
        pytest.fail("gunicorn did not answer: " + log.read_text()[-2000:])
    try:
        yield url, process, log
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def signed_in(url: str) -> requests.Session:
    session = requests.Session()
    html = session.get(f"{url}/login", timeout=5).text
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', html)
    assert token, html
    response = session.post(
        f"{url}/login", data={"username": "alice", "password": PASSWORD, "csrf_token": token.group(1)}, timeout=5
    )
    assert response.url.endswith("/batches"), response.text[:500]
    return session


def test_open_streams_dont_starve_pages_and_stop_is_quick(
    gunicorn: tuple[str, subprocess.Popen[bytes], Path], app: Flask
) -> None:
    url, process, log = gunicorn
    session = signed_in(url)
    received: list[str] = []
    opened = threading.Semaphore(0)
    responses: list[requests.Response] = []

    def listen() -> None:
        response = session.get(f"{url}/live/events", stream=True, timeout=30)
        responses.append(response)
        opened.release()
        try:
            for line in response.iter_lines(decode_unicode=True):
                if line and line.startswith("data:"):
                    received.append(line)
        except requests.RequestException:
            pass

    threads = [threading.Thread(target=listen, daemon=True) for _ in range(STREAMS)]
    for thread in threads:
        thread.start()
    for _ in threads:
        assert opened.acquire(timeout=10)
    assert all(r.status_code == 200 for r in responses)

    # Ordinary pages still answer promptly with every stream held open.
    timings = []
    for _ in range(10):
        started = time.monotonic()
        assert session.get(f"{url}/batches", timeout=5).status_code == 200
        timings.append(time.monotonic() - started)
    assert max(timings) < 1.0, timings

    # A hint published on Redis reaches every stream, whichever worker holds it.
    time.sleep(0.3)  # each worker's subscriber is up
    with app.app_context():
        events.publish("created", 1)
    deadline = time.monotonic() + 5
    while len(received) < STREAMS and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(received) == STREAMS

    # SIGTERM ends the streams at once instead of waiting out the graceful timeout.
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=15)
    assert time.monotonic() - started < 5
    assert process.returncode == 0
    assert "exited with code" not in log.read_text(), log.read_text()[-2000:]
    assert log.read_text().count("Worker exiting") == 2
    for thread in threads:
        thread.join(timeout=2)
    assert not any(thread.is_alive() for thread in threads)
