"""Item time limits with a real worker (threads pool): a timed-out item fails and the batch goes on."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
from flask import Flask
from marshmallow import Schema, fields

from app.extensions import db
from app.processors import StopRequested, registry
from app.processors.base import ProfileData, RunContext
from app.services import runs
from app.services.runs import watcher
from tests.conftest import ApiClient, assert_queue_consistent, wait_for

pytestmark = pytest.mark.usefixtures("settled")


def _create(api: ApiClient, profile_ids: list[int], processor: str, item_timeout: float, **parameters: Any) -> int:
    body = {"name": processor, "profile_ids": profile_ids, "processor": processor, "parameters": parameters}
    response = api.post("/batches", {**body, "item_timeout": item_timeout})
    assert response.status_code == 201, response.get_json()
    return response.get_json()["id"]


def _seconds(item: dict[str, Any]) -> float:
    return (datetime.fromisoformat(item["finished_at"]) - datetime.fromisoformat(item["started_at"])).total_seconds()


def _run_attempts(app: Flask, batch_id: int) -> int:
    with app.app_context():
        attempts = db.session.scalar(db.text("SELECT run_attempts FROM batches WHERE id = :id"), {"id": batch_id})
        db.session.remove()
    return attempts


def test_items_past_their_time_limit_fail_as_timed_out_and_the_queue_goes_on(
    api: ApiClient, app: Flask, celery_worker: Any
) -> None:
    profile_ids = api.profiles(2)
    began = time.monotonic()
    slow = _create(api, profile_ids, "sleep", item_timeout=1, seconds=30)
    behind = api.batch(profile_ids[:1], "noop", name="behind")["id"]

    wait_for(lambda: api.batch_of(behind)["status"] == "done", timeout=30)
    # Two items of one second, not of thirty (with room for a loaded machine: the items' own
    # durations below say the same from the worker's side).
    assert time.monotonic() - began < 25
    ended = api.batch_of(slow)
    assert (ended["status"], ended["error"], ended["item_timeout"]) == ("failed", "2 of 2 items failed", 1.0)
    items = api.items_of(slow)
    assert [(i["status"], i["error"], i["attempts"]) for i in items] == [("failed", "timed out after 1 s", 1)] * 2
    # Never before the limit (the first item too, whose clock starts at the claim); past it, the
    # watcher's next look ends the item: far from the processor's own thirty seconds.
    assert all(0.95 <= _seconds(item) < 10 for item in items), [_seconds(item) for item in items]
    logs = api.log_of(slow)
    assert "item 1/2 (p-0) failed: timed out after 1 s" in logs
    assert "item 2/2 (p-1) failed: timed out after 1 s" in logs
    assert logs[-1] == "finished: failed (2 of 2 items failed)"
    assert ended["finished_at"] <= api.batch_of(behind)["started_at"]
    assert_queue_consistent(app)


# The item time limit of the stop-before-the-limit test: long enough that the stop surely comes
# (and is seen) before it, however slow the machine.
LET_GO_LIMIT = 5


class _SlowToLetGo:
    """Notices a stop at once, then lets go only past its item's time limit (LET_GO_LIMIT).

    Its wait after the stop is the subject of the test (letting go after the limit), not a synchronization.
    """

    name = "slow_to_let_go"
    description = "Waits; on a stop, cleans up until past the item's time limit, then lets go."
    schema = Schema

    def process(self, profile: ProfileData, parameters: dict[str, Any], ctx: RunContext) -> Any:
        began = time.monotonic()  # after the item's start, which its limit counts from
        if ctx.wait(60):
            time.sleep(max(0.0, began + LET_GO_LIMIT + 0.5 - time.monotonic()))
            raise StopRequested()
        return None


def test_a_stop_before_the_time_limit_leaves_the_item_pending_even_if_it_lets_go_after_the_limit(
    api: ApiClient, app: Flask, celery_worker: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(registry._processors, _SlowToLetGo.name, _SlowToLetGo())
    profile_ids = api.profiles(2)
    batch = _create(api, profile_ids, _SlowToLetGo.name, item_timeout=LET_GO_LIMIT)
    wait_for(lambda: api.items_of(batch)[0]["status"] == "running", timeout=15)
    assert api.post(f"/batches/{batch}/stop").get_json()["status"] == "stopping"

    wait_for(lambda: api.batch_of(batch)["status"] == "stopped", timeout=30)
    items = api.items_of(batch)
    assert [(i["status"], i["error"], i["attempts"]) for i in items] == [("pending", None, 1), ("pending", None, 0)]
    assert "item 1/2 (p-0) interrupted by the stop; left pending" in api.log_of(batch)
    assert api.batch_of(batch)["progress"]["failed"] == 0
    assert_queue_consistent(app)


class _Hang:
    """Blocks on `released` for the named profiles, ignoring stops and its time limit."""

    name = "hang"
    description = "Blocks until the test lets it go, for the profiles in hang_profiles."

    class schema(Schema):  # noqa: N801  (the Processor protocol names it `schema`)
        hang_profiles = fields.List(fields.String(), load_default=list)

    def __init__(self) -> None:
        self.released = threading.Event()

    def process(self, profile: ProfileData, parameters: dict[str, Any], ctx: RunContext) -> Any:
        if profile.name in parameters["hang_profiles"]:
            self.released.wait(60)
        return {"profile": profile.name}


@pytest.fixture
def hang(monkeypatch: pytest.MonkeyPatch) -> Iterator[_Hang]:
    """Register the hang processor for this test; whatever it still blocks is let go at the end."""
    processor = _Hang()
    monkeypatch.setitem(registry._processors, _Hang.name, processor)
    yield processor
    processor.released.set()


class _Runs:
    """The batches.run calls of the in-process worker: tokens in the order they began, outcomes once they end."""

    def __init__(self) -> None:
        self.began: list[str] = []
        self.ended: dict[str, str] = {}

    def run_batch(self, batch_id: int, token: str, **kwargs: Any) -> str:
        self.began.append(token)
        outcome = runs.run_batch(batch_id, token, **kwargs)
        self.ended[token] = outcome
        return outcome


@pytest.fixture
def recorded_runs(monkeypatch: pytest.MonkeyPatch) -> _Runs:
    import tasks.batches

    recorded = _Runs()
    monkeypatch.setattr(tasks.batches, "run_batch", recorded.run_batch)
    return recorded


def test_a_processor_that_ignores_its_time_limit_is_abandoned_and_the_batch_goes_on_in_a_new_run(
    api: ApiClient,
    app: Flask,
    celery_worker: Any,
    hang: _Hang,
    recorded_runs: _Runs,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(watcher, "TIMEOUT_GRACE_SECONDS", 0.5)
    profile_ids = api.profiles(3)
    stuck = _create(api, profile_ids, _Hang.name, item_timeout=1, hang_profiles=["p-1"])
    behind = api.batch(profile_ids[:1], "noop", name="behind")["id"]

    wait_for(lambda: api.batch_of(behind)["status"] == "done", timeout=30)
    ended = api.batch_of(stuck)
    assert (ended["status"], ended["error"]) == ("failed", "1 of 3 items failed")
    items = api.items_of(stuck)
    assert [(i["status"], i["attempts"]) for i in items] == [("succeeded", 1), ("failed", 1), ("succeeded", 1)]
    assert items[1]["error"] == "timed out after 1 s (the processor ignored the limit; its thread was abandoned)"
    logs = api.log_of(stuck)
    assert f"item 2/3 (p-1) failed: {items[1]['error']}" in logs
    # A deliberate restart, not a lost run: the second run's claim counts as the first attempt again.
    assert sum(line.startswith("run began") for line in logs) == 2 and not any("(attempt" in line for line in logs)
    assert _run_attempts(app, stuck) == 1
    first, second, after = recorded_runs.began
    assert recorded_runs.ended == {second: "failed", after: "done"}  # the first run's thread is still blocked

    # Let the abandoned processor return: its run is fenced off and writes nothing.
    hang.released.set()
    wait_for(lambda: first in recorded_runs.ended, timeout=15)
    assert recorded_runs.ended[first] == "fenced"
    assert api.items_of(stuck) == items and api.log_of(stuck) == logs and api.batch_of(stuck) == ended
    assert_queue_consistent(app)
