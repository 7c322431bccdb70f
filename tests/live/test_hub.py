"""The live hub's message handling, on fakeredis: a real Redis adds nothing to parsing and fan-out.

The hub's subscription against a real Redis, across processes, is tested in
tests/views/test_live_stream.py and tests/browser/.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import fakeredis
import pytest
import redis

from app.live.hub import CLOSED, MAILBOX_SIZE, Hub, Mailbox
from tests.conftest import wait_for

CHANNEL = "batchq-test:events"


@pytest.fixture
def hub() -> Iterator[Hub]:
    live_hub = Hub("redis://unused", CHANNEL, max_streams=2)
    live_hub._client = fakeredis.FakeRedis()  # the one client the hub reads and subscribes with
    yield live_hub
    live_hub.shutdown()


def _subscribed(live_hub: Hub) -> Mailbox:
    mailbox = live_hub.open()
    assert mailbox is not None
    wait_for(live_hub.connected.is_set, timeout=5)
    return mailbox


def test_a_published_hint_reaches_every_open_stream_parsed(hub: Hub) -> None:
    first, second = _subscribed(hub), _subscribed(hub)
    hub._client.publish(CHANNEL, '{"id": 7, "kind": "created", "batch_id": 3}')
    for mailbox in (first, second):
        assert mailbox.get(timeout=5) == {"id": 7, "kind": "created", "batch_id": 3}


def test_a_message_that_is_not_a_hint_becomes_a_resync(hub: Hub) -> None:
    mailbox = _subscribed(hub)
    hub._client.publish(CHANNEL, "not json")
    hub._client.publish(CHANNEL, "[1, 2]")
    assert mailbox.get(timeout=5) == {"kind": "resync", "batch_id": None}
    assert mailbox.get(timeout=5) == {"kind": "resync", "batch_id": None}


def test_streams_beyond_the_maximum_are_refused_and_a_closed_one_frees_its_slot(hub: Hub) -> None:
    first = _subscribed(hub)
    _subscribed(hub)
    assert hub.open() is None
    hub.close(first)
    assert hub.open() is not None


def test_a_lagging_reader_gets_one_resync_instead_of_a_backlog() -> None:
    mailbox = Mailbox()
    for index in range(MAILBOX_SIZE + 5):
        mailbox.put({"id": index, "kind": "item", "batch_id": 1})
    assert mailbox.get(timeout=0) == {"kind": "resync", "batch_id": None}
    assert mailbox.get(timeout=0.01) is None  # the backlog went with it


def test_the_current_event_id_reads_the_counter_and_is_zero_when_redis_cannot_tell(hub: Hub) -> None:
    assert hub.current_event_id() == 0
    hub._client.set(f"{CHANNEL}:seq", 41)
    assert hub.current_event_id() == 41
    broken = fakeredis.FakeRedis()
    broken.get = lambda _key: (_ for _ in ()).throw(redis.ConnectionError("down"))  # type: ignore[method-assign]
    hub._client = broken
    assert hub.current_event_id() == 0


def test_shutdown_ends_every_stream(hub: Hub) -> None:
    mailbox = _subscribed(hub)
    ended = threading.Event()

    def read() -> None:
        if mailbox.get(timeout=5) is CLOSED:
            ended.set()

    reader = threading.Thread(target=read)
    reader.start()
    hub.shutdown()
    reader.join(timeout=5)
    assert ended.is_set() and hub.open() is None


def test_take_all_takes_every_hint_waiting_a_repeat_once_at_its_latest() -> None:
    mailbox = Mailbox()
    for hint in [
        {"id": 1, "kind": "item", "batch_id": 7},
        {"id": 2, "kind": "promoted", "batch_id": 8},
        {"id": 3, "kind": "item", "batch_id": 7},
        {"id": 4, "kind": "finished", "batch_id": 7},
    ]:
        mailbox.put(hint)
    burst, closed = mailbox.take_all()
    assert [hint["id"] for hint in burst] == [2, 3, 4]
    assert not closed
    assert mailbox.take_all() == ([], False)  # nothing waits: it returns at once, empty


def test_take_all_says_when_the_stream_was_closed() -> None:
    mailbox = Mailbox()
    mailbox.put({"id": 1, "kind": "item", "batch_id": 7})
    mailbox.put(CLOSED)
    burst, closed = mailbox.take_all()
    assert closed and [hint["id"] for hint in burst] == [1]


def test_take_all_turns_a_backlog_into_one_resync() -> None:
    mailbox = Mailbox()
    for index in range(MAILBOX_SIZE + 5):
        mailbox.put({"id": index, "kind": "item", "batch_id": 7})
    assert mailbox.take_all() == ([{"kind": "resync", "batch_id": None}], False)
    assert mailbox.take_all() == ([], False)


def test_the_hub_remembers_the_newest_hint_id_it_relayed(hub: Hub) -> None:
    """A page's re-fetch told of a hint at most this new is believed without asking Redis."""
    mailbox = _subscribed(hub)
    assert hub.latest_id == 0
    for hint_id in (3, 7, 5):  # out of order: the newest stays
        hub._client.publish(CHANNEL, f'{{"id": {hint_id}, "kind": "moved", "batch_id": 1}}')
    assert [mailbox.get(timeout=5)["id"] for _ in range(3)] == [3, 7, 5]  # type: ignore[index]
    assert hub.latest_id == 7
    hub._client.publish(CHANNEL, "not json")  # a resync: no id, nothing changes
    assert mailbox.get(timeout=5) == {"kind": "resync", "batch_id": None}
    assert hub.latest_id == 7
