"""A batch's completion webhook, end to end: a real worker ends the batch, a real receiver fails twice and
then takes it; the signature, the key, the body and the growing retry delays are checked as a receiver would."""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask

from app.config import PROJECT_ROOT
from app.services import callbacks
from tests.callbacks.conftest import RETRY_BASE, Receiver, deliveries, secret_of, status
from tests.conftest import ApiClient, wait_for
from workers.callbacks import CallbackSender

pytestmark = pytest.mark.usefixtures("settled")
_names = itertools.count()


def readme_verify() -> Callable[[str, str, bytes], bool]:
    """The README's ten lines a receiver uses to check a webhook, run as written."""
    text = (PROJECT_ROOT / "README.md").read_text()
    code = next(block.split("```")[0] for block in text.split("```python\n")[1:] if "def verify(" in block)
    namespace: dict[str, Any] = {}
    exec(code, namespace)
    return namespace["verify"]  # type: ignore[no-any-return]


def recompute(secret: str, header: str, body: bytes) -> int:
    """The signature recomputed here with the token's secret; returns the signed timestamp."""
    fields = dict(part.split("=", 1) for part in header.split(","))
    expected = hmac.new(secret.encode(), f"{fields['t']}.".encode() + body, hashlib.sha256).hexdigest()
    assert fields["v1"] == expected, "signature does not match"
    return int(fields["t"])


def create(api: ApiClient, callback_url: str, processor: str = "noop", **parameters: Any) -> dict[str, Any]:
    profile_ids = api.profiles(2, prefix=f"p{next(_names)}")
    body = {"name": "hooked", "profile_ids": profile_ids, "processor": processor, "parameters": parameters}
    response = api.post("/batches", {**body, "callback_url": callback_url})
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def rounds_until(sender: CallbackSender, condition: Callable[[], Any], timeout: float = 15) -> Any:
    """Run delivery rounds, as the loop would, until the condition holds."""
    return wait_for(lambda: sender.run_round() is not None and condition(), timeout=timeout)


def test_webhook_retries_a_failing_receiver_with_growing_delays_then_delivers_the_signed_batch(
    api: ApiClient, hooks_app: Flask, sender: CallbackSender, receivers: Callable[..., Receiver], celery_worker: Any
) -> None:
    receiver = receivers(status(500), status(503), status(204))
    batch = create(api, receiver.url)
    assert batch["callback_url"] == receiver.url
    wait_for(lambda: api.batch_of(batch["id"])["status"] == "done")
    ended = api.batch_of(batch["id"])

    rounds_until(sender, lambda: len(receiver.requests) == 3)
    rounds_until(sender, lambda: deliveries(hooks_app)[0]["delivered_at"] is not None)

    secret = secret_of(hooks_app, "tests")
    verify = readme_verify()
    for request in receiver.requests:
        signature = request.headers["X-Batchq-Signature"]
        assert request.path == "/hooks/batchq"
        assert request.headers["Idempotency-Key"] == f"batch-{batch['id']}-done"
        assert request.headers["Content-Type"] == "application/json"
        assert abs(recompute(secret, signature, request.body) - time.time()) < 60
        assert verify(secret, signature, request.body) is True
        assert json.loads(request.body) == ended  # the batch as GET /batches/<id> answers it
    assert len({request.body for request in receiver.requests}) == 1  # every retry sends the same bytes
    first = receiver.requests[0]
    assert not verify("whsec_another", first.headers["X-Batchq-Signature"], first.body)
    assert not verify(secret, first.headers["X-Batchq-Signature"], first.body.replace(b"done", b"fail"))

    first_gap = receiver.requests[1].at - receiver.requests[0].at
    second_gap = receiver.requests[2].at - receiver.requests[1].at
    assert RETRY_BASE <= first_gap < second_gap, (first_gap, second_gap)
    assert second_gap >= 2 * RETRY_BASE

    attempts = api.get(f"/batches/{batch['id']}/callbacks").get_json()
    assert attempts["total"] == 3 and attempts["page"] == 1
    assert [attempt["status_code"] for attempt in attempts["items"]] == [500, 503, 204]
    assert [attempt["error"] is None for attempt in attempts["items"]] == [False, False, True]
    assert "500" in attempts["items"][0]["error"]
    assert set(attempts["items"][0]) == {"at", "status_code", "error"}

    # Delivered: later rounds send nothing more.
    sender.run_round()
    assert len(receiver.requests) == 3


def test_webhook_is_sent_for_a_cancel_and_a_stop_too_and_never_for_a_batch_without_one(
    api: ApiClient, hooks_app: Flask, sender: CallbackSender, receivers: Callable[..., Receiver], celery_worker: Any
) -> None:
    receiver = receivers(status(200))
    long = create(api, receiver.url, "sleep", seconds=30)
    wait_for(lambda: api.batch_of(long["id"])["status"] == "in_progress")
    queued = create(api, receiver.url)
    plain = api.batch(api.profiles(1, prefix="plain"), name="plain")
    assert plain["callback_url"] is None

    assert api.post(f"/batches/{queued['id']}/cancel").status_code == 200
    assert api.post(f"/batches/{plain['id']}/cancel").status_code == 200
    assert api.post(f"/batches/{long['id']}/stop").status_code == 200
    wait_for(lambda: api.batch_of(long["id"])["status"] == "stopped")

    rounds_until(sender, lambda: len(receiver.requests) == 2)
    keys = sorted(request.headers["Idempotency-Key"] for request in receiver.requests)
    assert keys == sorted([f"batch-{queued['id']}-cancelled", f"batch-{long['id']}-stopped"])
    assert sorted(row["batch_id"] for row in deliveries(hooks_app)) == sorted([long["id"], queued["id"]])


def test_a_claimed_delivery_is_leased_so_no_other_sender_takes_it_meanwhile(
    api: ApiClient, hooks_app: Flask, receivers: Callable[..., Receiver], celery_worker: Any
) -> None:
    receiver = receivers(status(200))
    batch = create(api, receiver.url)
    wait_for(lambda: len(deliveries(hooks_app)) == 1)
    policy = callbacks.Policy.from_config(hooks_app.config)
    with hooks_app.app_context():
        first = callbacks.claim_due(policy)
        second = callbacks.claim_due(policy)
    assert [claim.batch_id for claim in first] == [batch["id"]] and second == []
    assert deliveries(hooks_app)[0]["next_attempt_at"].timestamp() > time.time() + policy.timeout


def test_the_sender_in_a_worker_main_process_sends_at_once_on_the_notification(
    api: ApiClient, hooks_app: Flask, receivers: Callable[..., Receiver], celery_worker: Any
) -> None:
    receiver = receivers(status(200))
    # As workers/liveness.py starts it in every worker and beat; a poll far longer than the test shows
    # that the first attempt follows the notification sent at the batch's end, not a poll.
    running = CallbackSender(hooks_app, poll=60).start()
    try:
        wait_for(lambda: running.listening)
        batch = create(api, receiver.url)
        wait_for(lambda: len(receiver.requests) == 1, timeout=10)
        assert receiver.requests[0].headers["Idempotency-Key"] == f"batch-{batch['id']}-done"
        wait_for(lambda: deliveries(hooks_app)[0]["delivered_at"] is not None)
    finally:
        running.stop()


def test_a_failed_batch_announces_failed_and_its_retry_does_not_copy_the_callback(
    api: ApiClient, hooks_app: Flask, sender: CallbackSender, receivers: Callable[..., Receiver], celery_worker: Any
) -> None:
    receiver = receivers(status(200))
    prefix = f"f{next(_names)}"
    profile_ids = api.profiles(2, prefix=prefix)
    body = {"seconds": 0, "fail_profiles": [f"{prefix}-0"]}
    response = api.post(
        "/batches",
        {
            "name": "f",
            "profile_ids": profile_ids,
            "processor": "sleep",
            "parameters": body,
            "callback_url": receiver.url,
        },
    )
    batch_id = response.get_json()["id"]
    wait_for(lambda: api.batch_of(batch_id)["status"] == "failed")

    rounds_until(sender, lambda: len(receiver.requests) == 1)
    assert receiver.requests[0].headers["Idempotency-Key"] == f"batch-{batch_id}-failed"
    assert json.loads(receiver.requests[0].body)["status"] == "failed"

    retried = api.post(f"/batches/{batch_id}/retry").get_json()
    assert retried["retry_of"] == batch_id and retried["callback_url"] is None
    wait_for(lambda: api.batch_of(retried["id"])["status"] == "failed")
    sender.run_round()
    assert len(receiver.requests) == 1 and len(deliveries(hooks_app)) == 1
