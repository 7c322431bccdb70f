"""The real web server (gunicorn with gevent workers): streams don't starve pages, stops are quick."""

from __future__ import annotations

import json
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
from tests.conftest import wait_for

ROOT = Path(__file__).resolve().parents[2]
STREAMS = 24
GRACEFUL_SECONDS = 60


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
        [
            sys.executable,
            "-m",
            "gunicorn",
            "--config",
            "gunicorn.conf.py",
            "--access-logfile",
            "/dev/null",
            # The project's 10 s, made a minute: a stop that waited it out could not pass for a quick one.
            "--graceful-timeout",
            str(GRACEFUL_SECONDS),
            "wsgi:app",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
    )
    url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        assert process.poll() is None, "gunicorn exited: " + log.read_text()[-2000:]
        try:
            return requests.get(f"{url}/login", timeout=5).status_code == 200
        except requests.RequestException:
            return False

    try:
        wait_for(answers, timeout=60, interval=0.1)
    except AssertionError:  # pragma: no cover - diagnostics
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
    """With every stream open, pages answer (a starved one would wait for a stream to end: minutes);
    a hint reaches every stream; SIGTERM ends them at once instead of waiting out the graceful timeout."""
    url, process, log = gunicorn
    session = signed_in(url)
    received: list[set[int]] = [set() for _ in range(STREAMS)]  # the hints' batch ids, per stream
    opened = threading.Semaphore(0)
    responses: list[requests.Response] = []

    def listen(index: int) -> None:
        response = session.get(f"{url}/live/events", stream=True, timeout=60)
        responses.append(response)
        opened.release()
        try:
            for line in response.iter_lines(decode_unicode=True):
                if line and line.startswith("data:"):
                    hint = json.loads(line.removeprefix("data:"))
                    if hint["kind"] == "created":  # not the web processes' own health hints
                        received[index].add(hint["batch_id"])
        except requests.RequestException:
            pass

    threads = [threading.Thread(target=listen, args=(index,), daemon=True) for index in range(STREAMS)]
    for thread in threads:
        thread.start()
    for _ in threads:
        assert opened.acquire(timeout=30)
    assert all(r.status_code == 200 for r in responses)

    # Ordinary pages still answer with every stream held open: promptly by design, and within
    # seconds on a loaded machine, where a page starved by the streams would wait for one to end.
    timings = []
    for _ in range(10):
        started = time.monotonic()
        assert session.get(f"{url}/batches", timeout=15).status_code == 200
        timings.append(time.monotonic() - started)
    assert max(timings) < 10, timings

    # A hint published on Redis reaches every stream, whichever worker holds it. A web process
    # subscribes as its first stream opens, and that stream waits for it a second at most: a hint
    # published before a subscription is up is lost, as hints may be. So hints go out, one a
    # second, until every stream has had one; a process that relays nothing leaves its streams without.
    published: list[int] = []

    def every_stream_has_a_hint() -> bool:
        if not all(received[index] & set(published) for index in range(STREAMS)):
            published.append(1000 + len(published))
            with app.app_context():
                events.publish("created", published[-1])
            return False
        return True

    wait_for(every_stream_has_a_hint, timeout=30, interval=1.0)

    # SIGTERM ends the streams at once instead of waiting out the graceful timeout (a minute here).
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=GRACEFUL_SECONDS + 30)
    assert time.monotonic() - started < GRACEFUL_SECONDS / 4
    assert process.returncode == 0
    assert "exited with code" not in log.read_text(), log.read_text()[-2000:]
    assert log.read_text().count("Worker exiting") == 2
    for thread in threads:
        thread.join(timeout=15)
    assert not any(thread.is_alive() for thread in threads)
