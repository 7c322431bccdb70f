"""Webhook fixtures: a real receiver (an HTTP server in a thread) and the app set to call it.

The delivery loop is driven a round at a time (`sender.run_round()`, what the loop in every
worker and beat runs) so a test sees each attempt; one test runs it as production does.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from flask import Flask

from app.extensions import db
from app.models import ApiToken
from workers.callbacks import CallbackSender

# Short enough that fail, fail, succeed takes about a second; long enough that each gap is measurable.
RETRY_BASE = 0.3

Answer = Callable[[BaseHTTPRequestHandler], None]


@dataclass
class Received:
    at: float  # time.monotonic() when the request arrived
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """A local HTTP server: each POST is recorded, then answered by the next of `answers` (the last repeats)."""

    answers: list[Answer]
    requests: list[Received] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.requests.append(Received(time.monotonic(), self.path, dict(self.headers), body))
                index = min(len(receiver.requests), len(receiver.answers)) - 1
                receiver.answers[index](self)

            def log_message(self, *_: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_port}/hooks/batchq"

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def status(code: int, headers: dict[str, str] | None = None) -> Answer:
    """An answer with that status code and a short body."""

    def answer(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(code)
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", "2")
        handler.end_headers()
        handler.wfile.write(b"ok")

    return answer


@pytest.fixture
def receivers() -> Iterator[Callable[..., Receiver]]:
    started: list[Receiver] = []

    def start(*answers: Answer) -> Receiver:
        started.append(Receiver(list(answers) or [status(200)]).start())
        return started[-1]

    yield start
    for receiver in started:
        receiver.close()


@pytest.fixture
def hooks_app(app: Flask, monkeypatch: pytest.MonkeyPatch) -> Flask:
    """The session's app, letting webhooks call 127.0.0.1 and retrying them within a second."""
    monkeypatch.setitem(app.config, "CALLBACK_ALLOWED_HOSTS", ("127.0.0.1",))
    monkeypatch.setitem(app.config, "CALLBACK_RETRY_BASE", RETRY_BASE)
    monkeypatch.setitem(app.config, "CALLBACK_TIMEOUT", 2.0)
    return app


@pytest.fixture
def sender(hooks_app: Flask) -> CallbackSender:
    """The delivery loop, not started: tests call `run_round()`."""
    return CallbackSender(hooks_app)


def secret_of(app: Flask, token_name: str) -> str:
    with app.app_context():
        secret = db.session.scalar(db.select(ApiToken.webhook_secret).where(ApiToken.name == token_name))
        db.session.remove()
    assert secret
    return secret


def deliveries(app: Flask) -> list[dict[str, Any]]:
    """Every delivery row, as a dict."""
    with app.app_context():
        rows = db.session.execute(db.text("SELECT * FROM callback_deliveries ORDER BY id")).mappings().all()
        db.session.remove()
    return [dict(row) for row in rows]
