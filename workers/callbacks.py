"""The completion-webhook sender: a thread in the main process of every worker and beat.

Not a Celery task: the pool's few slots run a batch and the promotions that follow it,
and a receiver that answers slowly must never make a promotion wait for a slot. So each
worker and beat runs this loop beside its heartbeat and repair timers
(workers/liveness.py). It LISTENs on the delivery channel for a prompt first attempt, and
polls every POLL_SECONDS as well: a notification sent while no sender listened, and every
retry (due later, with nothing to announce it), is found by the poll. Senders of several
processes never send the same attempt twice at once: each claim is a lease
(app/services/callbacks.py).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any

import psycopg
from flask import Flask

from app.extensions import db
from app.models.callbacks import CHANNEL
from app.services import callbacks

log = logging.getLogger(__name__)

# Seconds between polls when nothing is announced: the delay of a retry past its due time, at most.
POLL_SECONDS = 2.0


class CallbackSender:
    """Send due webhooks in rounds until stopped: on each notification and every `poll` seconds."""

    def __init__(self, flask_app: Flask, poll: float = POLL_SECONDS) -> None:
        self.flask_app = flask_app
        self.poll = poll
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._listener: psycopg.Connection[Any] | None = None

    def start(self) -> CallbackSender:
        self._thread = threading.Thread(target=self._loop, name="batchq-webhooks", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 15.0) -> None:
        """Stop after the round in progress (its sends are cut at CALLBACK_TIMEOUT) or the wait."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout)

    def run_round(self) -> int:
        """Send what is due now, round after round until a round finds less than a full load."""
        policy = callbacks.Policy.from_config(self.flask_app.config)
        total = 0
        while not self._stopping.is_set():
            claimed = callbacks.deliver_due(policy, self._in_app)
            total += claimed
            if claimed < callbacks.ROUND_SIZE:
                break
        return total

    def _loop(self) -> None:
        # The listening connection is opened, used and closed by this thread only: a pool
        # process forked from the worker inherits this object, and must not close the socket.
        try:
            while not self._stopping.is_set():
                try:
                    self.run_round()
                    self._wait_for_news()
                except Exception:
                    log.warning("webhook round failed; the next one retries", exc_info=True)
                    self._close_listener()
                    self._stopping.wait(self.poll)
        finally:
            self._close_listener()

    def _wait_for_news(self) -> None:
        """Return on a notification, or after `poll` seconds without one."""
        listener = self._listening()
        for _ in listener.notifies(timeout=self.poll, stop_after=1):
            pass

    def _listening(self) -> psycopg.Connection[Any]:
        if self._listener is None or self._listener.closed:
            with self.flask_app.app_context():
                url = db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
            listener = psycopg.connect(url, autocommit=True)
            listener.execute(f"LISTEN {CHANNEL}")
            self._listener = listener  # set once listening: `listening` then means no notification is missed
        return self._listener

    @property
    def listening(self) -> bool:
        return self._listener is not None

    def _close_listener(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(Exception):
                listener.close()

    def _in_app(self, step: Callable[[], Any]) -> Any:
        """Run one database step in an app context (and session) of its own."""
        with self.flask_app.app_context():
            try:
                return step()
            finally:
                db.session.rollback()
                db.session.remove()
