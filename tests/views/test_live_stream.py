"""GET /live/events: the Server-Sent Events stream and its per-process hub."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from app.services import events
from tests.conftest import wait_for


@pytest.fixture
def short_streams(app: Flask) -> Iterator[None]:
    saved = {key: app.config[key] for key in ("LIVE_HEARTBEAT_SECONDS", "LIVE_STREAM_SECONDS")}
    app.config.update(LIVE_HEARTBEAT_SECONDS=0.2, LIVE_STREAM_SECONDS=3.0)
    yield
    app.config.update(saved)


class Stream:
    """Reads an event stream chunk by chunk from the test client."""

    def __init__(self, client: FlaskClient, headers: dict[str, str] | None = None) -> None:
        self.response = client.get("/live/events", headers=headers or {}, buffered=False)
        self.chunks = self.response.response  # the generator, one chunk per yield

    def next(self) -> str:
        chunk = next(iter(self.chunks))
        return chunk.decode() if isinstance(chunk, bytes) else chunk

    def until_heartbeat(self) -> list[str]:
        """The chunks up to the first heartbeat (hints relayed meanwhile, such as the health watch's), and it."""
        chunks = [self.next()]
        while chunks[-1] != ": heartbeat\n\n" and len(chunks) < 100:
            chunks.append(self.next())
        return chunks

    def close(self) -> None:
        self.response.close()


def hub_of(app: Flask):  # type: ignore[no-untyped-def]
    return app.extensions["live_hub"]


def test_stream_headers_and_first_lines(app: Flask, client: FlaskClient, short_streams: None) -> None:
    stream = Stream(client)
    try:
        assert stream.response.status_code == 200
        assert stream.response.mimetype == "text/event-stream"
        assert stream.response.headers["X-Accel-Buffering"] == "no"
        assert stream.response.headers["Cache-Control"] == "no-cache"
        assert stream.next() == "retry: 500\n\n"
        # A health hint may come first: other tests' workers start and stop heartbeats.
        *hints, heartbeat = stream.until_heartbeat()
        assert heartbeat == ": heartbeat\n\n"
        assert all(hint.startswith("event: batchq") and '"kind": "health"' in hint for hint in hints), hints
    finally:
        stream.close()


def test_stream_relays_a_published_hint(app: Flask, client: FlaskClient, short_streams: None) -> None:
    stream = Stream(client)
    try:
        stream.next()
        wait_for(lambda: hub_of(app).connected.is_set(), timeout=15)
        before = hub_of(app).current_event_id()
        with app.app_context():
            events.publish("created", 42)
        # Heartbeats (every 0.2 s) and any other hint may come first: read on until ours.
        for _ in range(100):
            lines = dict(line.split(": ", 1) for line in stream.next().strip().splitlines() if ": " in line)
            if json.loads(lines.get("data", "{}")) == {"kind": "created", "batch_id": 42}:
                break
        else:
            pytest.fail("the published hint never came")
        assert lines["event"] == "batchq"
        assert before < int(lines["id"]) <= hub_of(app).current_event_id()
    finally:
        stream.close()


def test_reconnect_with_an_old_last_event_id_gets_one_catch_up(
    app: Flask, client: FlaskClient, short_streams: None
) -> None:
    with app.app_context():
        events.publish("finished", 1)
    current = hub_of(app).current_event_id()
    stream = Stream(client, {"Last-Event-ID": str(current - 1)})
    try:
        stream.next()
        assert stream.next() == f'id: {current}\nevent: batchq\ndata: {{"kind": "catchup", "batch_id": null}}\n\n'
    finally:
        stream.close()
    up_to_date = Stream(client, {"Last-Event-ID": str(current)})
    try:
        up_to_date.next()
        # A catch-up would come first of all; a hint relayed late (the hub's own thread) is no catch-up.
        *hints, heartbeat = up_to_date.until_heartbeat()
        assert heartbeat == ": heartbeat\n\n"
        assert not any('"kind": "catchup"' in hint for hint in hints), hints
    finally:
        up_to_date.close()


def test_stream_ends_after_its_lifetime(app: Flask, client: FlaskClient, short_streams: None) -> None:
    """A 0.3 s lifetime with a heartbeat every 0.2 s: the stream ends by itself after at most two heartbeats.

    Counted, not timed: each heartbeat waits its 0.2 s however busy the machine, so a stream that
    outlived its lifetime would show more of them (and one that never ends, the cap of 50 chunks).
    """
    app.config["LIVE_STREAM_SECONDS"] = 0.3
    stream = Stream(client)
    chunks = [c.decode() if isinstance(c, bytes) else c for c in itertools.islice(iter(stream.chunks), 50)]
    stream.close()
    assert len(chunks) < 50, "the stream did not end"
    assert chunks[0] == "retry: 500\n\n"
    assert chunks.count(": heartbeat\n\n") <= 2, chunks


def test_streams_beyond_the_cap_get_503(app: Flask, client: FlaskClient, short_streams: None) -> None:
    hub = hub_of(app)
    saved = hub.max_streams
    hub.max_streams = hub.open_streams + 1
    first = Stream(client)
    try:
        first.next()
        refused = client.get("/live/events")
        assert refused.status_code == 503
        assert refused.headers["Retry-After"] == "30"
    finally:
        first.close()
        hub.max_streams = saved
    wait_for(lambda: hub.open_streams < hub.max_streams, timeout=15)


def test_hub_collapses_a_backlog_into_one_resync(app: Flask) -> None:
    from app.live.hub import MAILBOX_SIZE, Mailbox

    mailbox = Mailbox()
    for index in range(MAILBOX_SIZE + 10):
        mailbox.put({"id": index, "kind": "item", "batch_id": 1})
    assert mailbox.get(timeout=0.1) == {"kind": "resync", "batch_id": None}
    assert mailbox.get(timeout=0.05) is None


class OneHub:
    """A hub for `_stream` alone: no Redis; its window waits return at once and are recorded in `calls`."""

    def __init__(self, calls: list[str]) -> None:
        self.calls = calls
        self.closing = self

    def current_event_id(self) -> int:
        return 0

    def close(self, mailbox: Any) -> None:
        pass

    def wait(self, seconds: float) -> bool:  # hub.closing.wait: the window, not cut short by a shutdown
        self.calls.append(f"wait {seconds}")
        return False


def test_hints_that_follow_one_at_once_go_out_in_one_write() -> None:
    """At 200 open pages a write per hint per page was most of what the web process spent."""
    from app.live.hub import CLOSED, Mailbox
    from app.live.streams import _stream

    mailbox = Mailbox()
    for event_id, kind in enumerate(["promoted", "item", "item", "finished"], start=1):
        mailbox.put({"id": event_id, "kind": kind, "batch_id": 3})
    mailbox.put(CLOSED)
    calls: list[str] = []
    chunks = list(_stream(OneHub(calls), mailbox, None, heartbeat=5.0, lifetime=10.0, burst_seconds=1.0))  # type: ignore[arg-type]
    assert chunks[0].startswith("retry:")
    assert chunks[1] == 'id: 1\nevent: batchq\ndata: {"kind": "promoted", "batch_id": 3}\n\n'  # at once
    assert len(chunks) == 3  # the rest in one write after the window, the repeated item once (its latest)
    assert [line for line in chunks[2].splitlines() if line.startswith("id:")] == ["id: 3", "id: 4"]
    assert calls == ["wait 1.0"]


def test_while_hints_keep_coming_a_stream_writes_once_per_window() -> None:
    """Each write after the first waits out a window of its own: a busy queue costs a page a few writes a
    second, and the stream wakes once per window, never once per hint."""
    from app.live.hub import CLOSED
    from app.live.streams import _stream

    class ScriptedMailbox:
        """Hints come in every window, two windows on end, then none."""

        def __init__(self, calls: list[str]) -> None:
            self.calls = calls
            self.windows = [[{"id": 2, "kind": "item", "batch_id": 3}], [{"id": 3, "kind": "finished", "batch_id": 3}]]

        def get(self, timeout: float) -> dict[str, Any] | None:
            self.calls.append("get")
            return {"id": 1, "kind": "promoted", "batch_id": 3} if self.calls == ["get"] else CLOSED

        def take_all(self) -> tuple[list[dict[str, Any]], bool]:
            self.calls.append("take")
            return (self.windows.pop(0) if self.windows else []), False

    calls: list[str] = []
    chunks = list(_stream(OneHub(calls), ScriptedMailbox(calls), None, heartbeat=5.0, lifetime=10.0, burst_seconds=0.2))  # type: ignore[arg-type]
    ids = [line for chunk in chunks for line in chunk.splitlines() if line.startswith("id:")]
    assert ids == ["id: 1", "id: 2", "id: 3"]
    assert len(chunks) == 4  # retry, then one write per window that had hints
    # Every write after the first followed a window; a window without hints ended the run of windows.
    assert calls == ["get", "wait 0.2", "take", "wait 0.2", "take", "wait 0.2", "take", "get"]


def test_a_stream_whose_hints_never_stop_still_ends_at_its_lifetime() -> None:
    """The page reconnects at once; a stream kept busy must not outlive LIVE_STREAM_SECONDS."""
    import threading

    from app.live.streams import _stream

    class BusyHub:
        closing = threading.Event()  # never set: its waits are the real windows

        def current_event_id(self) -> int:
            return 0

        def close(self, mailbox: Any) -> None:
            pass

    class EndlessMailbox:
        def get(self, timeout: float) -> dict[str, Any]:
            return {"id": 1, "kind": "item", "batch_id": 3}

        def take_all(self) -> tuple[list[dict[str, Any]], bool]:
            return [{"id": 2, "kind": "item", "batch_id": 3}], False

    stream = _stream(BusyHub(), EndlessMailbox(), None, heartbeat=5.0, lifetime=0.3, burst_seconds=0.02)  # type: ignore[arg-type]
    for chunks, _ in enumerate(stream, start=1):
        assert chunks < 500, "the stream went on past its lifetime"
