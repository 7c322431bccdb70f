"""The sender as production runs it: in the main process of a real prefork `celery worker` (started as the
Procfile starts it), which also runs the batch; the webhook follows the batch's end at once."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from app.config import Settings
from app.services import dispatch
from tests.callbacks.conftest import Receiver, deliveries, status
from tests.conftest import ApiClient, wait_for
from tests.faults.conftest import WorkerProcess

_names = itertools.count()


@pytest.fixture
def worker(
    hooks_app: Flask, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clean: None
) -> Iterator[WorkerProcess]:
    process = WorkerProcess(settings, settings.redis_url, tmp_path)
    monkeypatch.setattr(dispatch, "celery", lambda: process.sender)
    process.start(env={"CALLBACK_ALLOWED_HOSTS": "127.0.0.1", "CALLBACK_TIMEOUT": "5"})
    try:
        yield process
    finally:
        process.close()


def test_a_worker_sends_the_webhook_of_the_batch_it_ends_from_its_main_process(
    api: ApiClient, hooks_app: Flask, worker: WorkerProcess, receivers: Callable[..., Receiver]
) -> None:
    receiver = receivers(status(200))
    profile_ids = api.profiles(2, prefix=f"w{next(_names)}")
    response = api.post(
        "/batches",
        {"name": "w", "profile_ids": profile_ids, "processor": "noop", "callback_url": receiver.url},
    )
    assert response.status_code == 201, response.get_json()
    batch_id = response.get_json()["id"]

    wait_for(lambda: len(receiver.requests) == 1, timeout=30)
    assert receiver.requests[0].headers["Idempotency-Key"] == f"batch-{batch_id}-done"
    wait_for(lambda: deliveries(hooks_app)[0]["delivered_at"] is not None, timeout=10)
    ended: Any = api.batch_of(batch_id)
    assert ended["status"] == "done"
    assert [attempt["status_code"] for attempt in api.get(f"/batches/{batch_id}/callbacks").get_json()["items"]] == [
        200
    ]
