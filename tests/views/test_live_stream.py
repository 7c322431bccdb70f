"""GET /live/events: the Server-Sent Events stream and its per-process hub."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

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
        chunk = stream.next()
        while chunk.startswith("event: batchq") and '"kind": "health"' in chunk:
            chunk = stream.next()
        assert chunk == ": heartbeat\n\n"
    finally:
        stream.close()


def test_stream_relays_a_published_hint(app: Flask, client: FlaskClient, short_streams: None) -> None:
    stream = Stream(client)
    try:
        stream.next()
        wait_for(lambda: hub_of(app).connected.is_set(), timeout=5)
        with app.app_context():
            events.publish("created", 42)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            chunk = stream.next()
            if chunk.startswith("id:"):
                break
        lines = dict(line.split(": ", 1) for line in chunk.strip().splitlines())
        assert lines["event"] == "batchq"
        assert json.loads(lines["data"]) == {"kind": "created", "batch_id": 42}
        assert int(lines["id"]) == hub_of(app).current_event_id()
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
        assert up_to_date.next() == ": heartbeat\n\n"
    finally:
        up_to_date.close()


def test_stream_ends_after_its_lifetime(app: Flask, client: FlaskClient, short_streams: None) -> None:
    app.config["LIVE_STREAM_SECONDS"] = 0.3
    stream = Stream(client)
    started = time.monotonic()
    chunks = list(stream.chunks)
    assert time.monotonic() - started < 2
    assert chunks[0] in (b"retry: 500\n\n", "retry: 500\n\n")
    stream.close()


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
    wait_for(lambda: hub.open_streams < hub.max_streams, timeout=2)


def test_hub_collapses_a_backlog_into_one_resync(app: Flask) -> None:
    from app.live.hub import MAILBOX_SIZE, Mailbox

    mailbox = Mailbox()
    for index in range(MAILBOX_SIZE + 10):
        mailbox.put({"id": index, "kind": "item", "batch_id": 1})
    assert mailbox.get(timeout=0.1) == {"kind": "resync", "batch_id": None}
    assert mailbox.get(timeout=0.05) is None
