"""The health watch's rounds: a change reaches the pages even when the watcher never saw it.

Each round is driven by hand (`look`), so what happens between two rounds is exact, not timed:
a worker leaves and comes back between them, as it can on a loaded machine whose rounds come late.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask

from app.live.health_watch import HEALTH_HINT, HealthWatch
from app.live.hub import Hub, Mailbox
from app.services.health import read_health
from workers.liveness import ProcessLife


@pytest.fixture
def hub(app: Flask) -> Iterator[Hub]:
    """A hub of the test's own, on a channel of its own.

    Not the app's: the app is shared by the whole session, and its own watcher (started by any
    earlier test's stream) would hint the same mailboxes when it sees the worker leave.
    """
    own_hub = Hub(app.config["REDIS_URL"], app.config["EVENTS_CHANNEL"] + ":health-watch-test", max_streams=4)
    yield own_hub
    own_hub.shutdown()


@pytest.fixture
def stream(hub: Hub) -> Iterator[Mailbox]:
    """An open page's mailbox: the watcher hints only when a stream is open."""
    mailbox = hub.open()
    assert mailbox is not None
    yield mailbox
    hub.close(mailbox)


@pytest.fixture
def watch(app: Flask, hub: Hub) -> HealthWatch:
    """A watcher of the app's hub whose rounds the test drives (`look`); no thread of its own."""
    return HealthWatch(app, hub, every=3600)


def first_look(watch: HealthWatch, stream: Mailbox) -> tuple[Any, Any]:
    """The watcher's first round, with the page's mailbox emptied of what came before."""
    last = watch.look()
    health_hints(stream)
    return last


def health_hints(mailbox: Mailbox) -> int:
    """How many health hints the page got (the queue's hints, from other tests' publishes, aside)."""
    hints = []
    while (hint := mailbox.get(timeout=0)) is not None:
        hints.append(hint)
    return hints.count(HEALTH_HINT)


def page_shown_health(app: Flask, watch: HealthWatch) -> None:
    """A page re-fetched its banner (a queue hint asked it to) and was shown the health as it is now."""
    with app.app_context():
        watch.served(read_health())


def leave_and_come_back(app: Flask, worker: Any, between: Any = None) -> ProcessLife:
    worker.stop()  # a graceful stop deletes its record: gone at once
    if between is not None:
        between()
    return ProcessLife(app, worker.record, repair_every=None).start()


def test_a_worker_gone_and_back_between_two_rounds_reaches_the_page_that_showed_it_gone(
    app: Flask, watch: HealthWatch, stream: Mailbox, live_worker: Any
) -> None:
    last = first_look(watch, stream)
    back = leave_and_come_back(app, live_worker, between=lambda: page_shown_health(app, watch))
    try:
        generation = watch.generation
        watch.look(last)  # reads what it read before: only the page saw the worker gone
        assert health_hints(stream) == 1
        assert watch.generation == generation + 1  # and the shared table renders are read again
    finally:
        back.stop()


def test_a_round_that_reads_what_the_pages_were_shown_hints_nothing(
    app: Flask, watch: HealthWatch, stream: Mailbox, live_worker: Any
) -> None:
    last = first_look(watch, stream)
    page_shown_health(app, watch)  # the same health as the watcher read
    last = watch.look(last)
    # Gone and back with no page looking in between: nothing any page shows is out of date.
    back = leave_and_come_back(app, live_worker)
    try:
        generation = watch.generation
        watch.look(last)
        assert health_hints(stream) == 0
        assert watch.generation == generation
    finally:
        back.stop()


def test_a_change_the_watcher_reads_is_hinted_once(watch: HealthWatch, stream: Mailbox, live_worker: Any) -> None:
    last = first_look(watch, stream)
    live_worker.stop()
    last = watch.look(last)
    assert health_hints(stream) == 1
    watch.look(last)
    assert health_hints(stream) == 0
