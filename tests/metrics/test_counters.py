"""Counters and histograms observed where things happen: repairs by kind, promotions' time queued and handoffs.

The in-process app's /metrics reads the session's METRICS_DIR, this process's
file included: each test compares a scrape before and after.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask import Flask

from app.services import dispatch, queue_repairs
from tests.conftest import ApiClient
from tests.faults.helpers import age_heartbeat, batch_status
from tests.metrics.scrapes import samples, value


@pytest.fixture
def unsent(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, str]]:
    """Record run dispatches instead of sending them: no run moves a batch behind the test's back."""
    calls: list[tuple[int, str]] = []
    monkeypatch.setattr(dispatch, "send_run", lambda batch_id, token: calls.append((batch_id, token)))
    return calls


@pytest.fixture
def delta(app: Flask) -> Callable[[], Callable[..., float]]:
    """Scrape now; the function returned scrapes again and tells a sample's change since."""

    def scrape() -> dict:
        return samples(app.test_client().get("/metrics").text)

    def start() -> Callable[..., float]:
        before = scrape()

        def change(name: str, **labels: str) -> float:
            return value(scrape(), name, **labels) - value(before, name, **labels)

        return change

    return start


def _fail_the_running_batch(app: Flask, batch_id: int) -> None:
    """A repair round that finds the run lost and gives up on it (no attempts left), then promotes."""
    age_heartbeat(app, batch_id)
    with app.app_context():
        queue_repairs.recover_lost_run(heartbeat_timeout=1, stop_grace=30, max_attempts=0)


def test_a_lost_run_sent_again_counts_one_repair_of_its_kind(
    api: ApiClient, app: Flask, unsent: list, delta: Callable
) -> None:
    batch = api.batch(api.profiles(1), "noop")
    change = delta()
    age_heartbeat(app, batch["id"])
    with app.app_context():
        queue_repairs.recover_lost_run(heartbeat_timeout=1, stop_grace=30)
    assert len(unsent) == 2  # its first dispatch, then the repair's
    assert change("batchq_repairs_total", kind="lost_run_relaunched") == 1
    assert change("batchq_repairs_total", kind="lost_run_failed") == 0


def test_a_repair_round_that_ends_a_lost_run_hands_off_to_the_waiting_batch(
    api: ApiClient, app: Flask, unsent: list, delta: Callable
) -> None:
    profiles = api.profiles(1)
    first, waiting = api.batch(profiles, "noop"), api.batch(profiles, "noop")
    change = delta()
    _fail_the_running_batch(app, first["id"])
    assert (batch_status(app, first["id"]), batch_status(app, waiting["id"])) == ("failed", "in_progress")
    assert change("batchq_repairs_total", kind="lost_run_failed") == 1
    assert change("batchq_repairs_total", kind="promoted") == 1
    assert change("batchq_handoff_seconds_count") == 1
    assert change("batchq_time_queued_seconds_count") == 1


def test_an_operators_start_or_a_batch_into_an_idle_queue_is_no_handoff(
    api: ApiClient, app: Flask, unsent: list, delta: Callable
) -> None:
    profiles = api.profiles(1)
    change = delta()
    first = api.batch(profiles, "noop")  # into an idle queue: starts at once
    assert change("batchq_time_queued_seconds_count") == 1
    assert api.post("/queue/drain").status_code == 200
    _fail_the_running_batch(app, first["id"])  # the drain pauses the queue as the run ends
    second = api.batch(profiles, "noop")
    assert batch_status(app, second["id"]) == "queued"
    assert api.post("/queue/start").status_code == 200
    assert batch_status(app, second["id"]) == "in_progress"
    assert change("batchq_time_queued_seconds_count") == 2
    assert change("batchq_handoff_seconds_count") == 0
    assert change("batchq_http_requests_total", method="POST", route="/api/v1/queue/start", status="200") == 1
