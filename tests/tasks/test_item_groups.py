"""Items in groups with a real worker (threads pool): every outcome of a group is written, and a stop
committed in the middle of a group starts no further item."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask, current_app
from marshmallow import Schema, fields

from app.processors import registry
from app.processors.base import ProfileData, RunContext
from app.services import queue_manager
from app.services.runs import items as run_items
from tests.conftest import ApiClient, assert_queue_consistent, wait_for

pytestmark = pytest.mark.usefixtures("settled")


def test_every_outcome_of_every_group_is_written_once_with_its_log_line_in_order(
    api: ApiClient, app: Flask, celery_worker: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    groups: list[int] = []
    write_group = run_items._write_group

    def counted(run: Any, connection: Any, finished: list[Any]) -> None:
        groups.append(len(finished))
        write_group(run, connection, finished)

    monkeypatch.setattr(run_items, "_write_group", counted)
    count = 150
    batch_id = api.batch(api.profiles(count), "noop", name="grouped")["id"]

    wait_for(lambda: api.batch_of(batch_id)["status"] == "done", timeout=60)
    assert max(groups) > 1  # written in groups, not item by item
    assert sum(groups) in (count - 1, count)  # each once; the last may be written with the batch's end
    items = api.items_of(batch_id)
    assert [(item["status"], item["attempts"]) for item in items] == [("succeeded", 1)] * count
    assert all(item["started_at"] and item["finished_at"] for item in items)
    assert api.batch_of(batch_id)["progress"]["succeeded"] == count
    logged = [line for line in api.log_of(batch_id) if line.startswith("item ")]
    assert logged == [f"item {n}/{count} (p-{n - 1}) succeeded" for n in range(1, count + 1)]
    assert_queue_consistent(app)


class _StopAt:
    """Commits a stop of its own batch (from another thread, as the API would) while on the named profile,
    then succeeds without looking at the stop."""

    name = "stop_at"
    description = "Stops its batch on the profiles in stop_profiles."

    class schema(Schema):  # noqa: N801  (the Processor protocol names it `schema`)
        stop_profiles = fields.List(fields.String(), load_default=list)

    def process(self, profile: ProfileData, parameters: dict[str, Any], ctx: RunContext) -> Any:
        if profile.name in parameters["stop_profiles"]:
            app = current_app._get_current_object()  # type: ignore[attr-defined]

            def stop() -> None:
                with app.app_context():
                    queue_manager.stop(ctx.batch_id, "test")

            stopper = threading.Thread(target=stop)
            stopper.start()
            stopper.join(10)
        return {"profile": profile.name}


@pytest.fixture
def stop_at(monkeypatch: pytest.MonkeyPatch) -> Iterator[_StopAt]:
    processor = _StopAt()
    monkeypatch.setitem(registry._processors, _StopAt.name, processor)
    yield processor


def test_a_stop_committed_in_the_middle_of_a_group_starts_no_further_item_and_keeps_the_group(
    api: ApiClient, app: Flask, celery_worker: Any, stop_at: _StopAt
) -> None:
    count, stop_on = 40, 25
    batch_id = api.batch(api.profiles(count), "stop_at", name="stopped", stop_profiles=[f"p-{stop_on}"])["id"]

    wait_for(lambda: api.batch_of(batch_id)["status"] == "stopped", timeout=60)
    items = api.items_of(batch_id)
    # Every item up to the one that stopped the batch ran once and is written, the group's too...
    assert [(item["status"], item["attempts"]) for item in items[: stop_on + 1]] == [("succeeded", 1)] * (stop_on + 1)
    # ...and none began after the stop.
    assert [(item["status"], item["attempts"], item["started_at"]) for item in items[stop_on + 1 :]] == [
        ("pending", 0, None)
    ] * (count - stop_on - 1)
    batch = api.batch_of(batch_id)
    assert batch["progress"]["succeeded"] == stop_on + 1
    assert f"stopped ({count - stop_on - 1} items left pending)" in api.log_of(batch_id)
    assert_queue_consistent(app)
