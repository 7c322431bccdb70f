"""The per-process Redis subscriber that fans live hints out to the open streams.

Each web process keeps one subscription to the events channel, started lazily
(after gunicorn forks) by the first stream, and hands every hint to every open
stream's mailbox. Hints only say "look again", so a full mailbox or a lost
Redis connection is turned into one "resync" hint instead of a backlog.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
from typing import Any

import redis

log = logging.getLogger(__name__)

CLOSED: dict[str, Any] = {"kind": "closed"}
MAILBOX_SIZE = 64


class Mailbox:
    """One open stream's inbox of hints."""

    def __init__(self) -> None:
        self._queue: queue.Queue[dict[str, Any]] = queue.Queue(MAILBOX_SIZE)
        self._overflowed = False

    def put(self, hint: dict[str, Any]) -> None:
        """Deliver a hint; when the reader lags, collapse the backlog into one resync."""
        try:
            self._queue.put_nowait(hint)
        except queue.Full:
            self._overflowed = True

    def get(self, timeout: float) -> dict[str, Any] | None:
        """Wait up to `timeout` seconds for the next hint; None means nothing came."""
        if self._overflowed:
            self._overflowed = False
            self._drain()
            return {"kind": "resync", "batch_id": None}
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def take_all(self) -> tuple[list[dict[str, Any]], bool]:
        """Every hint waiting, at once, a repeat of one kept once (its latest); and whether the stream
        was closed. A stream calls it after waiting out its window: it wakes once per window, not once
        per hint (app/live/streams.py)."""
        if self._overflowed:
            self._overflowed = False
            self._drain()
            return [{"kind": "resync", "batch_id": None}], False
        latest: dict[tuple[Any, Any], dict[str, Any]] = {}
        while True:
            try:
                hint = self._queue.get_nowait()
            except queue.Empty:
                return list(latest.values()), False
            if hint is CLOSED:
                return list(latest.values()), True
            key = (hint.get("kind"), hint.get("batch_id"))
            latest.pop(key, None)  # a repeat moves to the end: its id is the newest
            latest[key] = hint

    def _drain(self) -> None:
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                return


class Hub:
    """Fan-out of one Redis channel to at most `max_streams` mailboxes in this process."""

    def __init__(self, redis_url: str, channel: str, max_streams: int) -> None:
        self.redis_url = redis_url
        self.channel = channel
        self.max_streams = max_streams
        self._client = redis.Redis.from_url(redis_url, socket_timeout=5, socket_connect_timeout=2)
        self._mailboxes: set[Mailbox] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._closing = threading.Event()
        self.connected = threading.Event()
        # The newest hint id this process has relayed: a page's re-fetch that says it was told of one
        # at most this new is believed without asking Redis (app/views/batches.py).
        self.latest_id = 0

    @property
    def open_streams(self) -> int:
        return len(self._mailboxes)

    @property
    def closing(self) -> threading.Event:
        """Set once the process is stopping: every stream and watcher of the hub ends."""
        return self._closing

    def current_event_id(self) -> int:
        """The id of the latest hint published, 0 if none (or Redis can't tell)."""
        try:
            return int(self._client.get(f"{self.channel}:seq") or 0)
        except redis.RedisError:
            return 0

    def open(self) -> Mailbox | None:
        """Register a stream; None when this process already holds its maximum."""
        with self._lock:
            if self._closing.is_set() or len(self._mailboxes) >= self.max_streams:
                return None
            mailbox = Mailbox()
            self._mailboxes.add(mailbox)
            self._ensure_listener()
        # The first stream of a process waits (briefly) for the subscription, so the catch-up
        # check that follows can't miss a hint published while it was being set up.
        self.connected.wait(1.0)
        return mailbox

    def close(self, mailbox: Mailbox) -> None:
        """Unregister a stream."""
        with self._lock:
            self._mailboxes.discard(mailbox)

    def broadcast(self, hint: dict[str, Any]) -> None:
        """Give a hint to every open stream."""
        with self._lock:
            mailboxes = list(self._mailboxes)
        for mailbox in mailboxes:
            mailbox.put(hint)

    def shutdown(self) -> None:
        """End every open stream now (the process is stopping) and refuse new ones."""
        self._closing.set()
        self.broadcast(CLOSED)

    def _ensure_listener(self) -> None:
        # A listener thread doesn't survive fork: start one per process.
        if self._thread is not None and self._thread.is_alive() and self._pid == os.getpid():
            return
        self._pid = os.getpid()
        self.connected.clear()
        self._thread = threading.Thread(target=self._listen, name="live-hub", daemon=True)
        self._thread.start()

    def _listen(self) -> None:
        delay = 0.5
        first = True
        while not self._closing.is_set():
            try:
                self._subscribe_and_relay(resync=not first)
                return
            except (redis.RedisError, OSError):
                if self.connected.is_set():  # it was up: a fresh loss starts the back-off over
                    delay = 0.5
                log.warning("live hub lost Redis; retrying in %.1fs", delay, exc_info=True)
                self.connected.clear()
                first = False
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _subscribe_and_relay(self, resync: bool) -> None:
        pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        try:
            pubsub.subscribe(self.channel)
            self.connected.set()
            if resync:  # hints may have been lost while we were away
                self.broadcast({"id": self.current_event_id(), "kind": "resync", "batch_id": None})
            while not self._closing.is_set():
                message = pubsub.get_message(timeout=1.0)
                if message is not None and message["type"] == "message":
                    hint = _parse(message["data"])
                    if isinstance(hint.get("id"), int) and hint["id"] > self.latest_id:
                        self.latest_id = hint["id"]
                    self.broadcast(hint)
        finally:
            pubsub.close()


def _parse(data: bytes | str) -> dict[str, Any]:
    try:
        hint = json.loads(data)
    except ValueError:
        return {"kind": "resync", "batch_id": None}
    return hint if isinstance(hint, dict) else {"kind": "resync", "batch_id": None}
