"""Each token's webhook secret: printed once at `token create` (before the token, which stays the last line)
and at `token rotate-secret`, never by `token list`, and the key the next attempt is signed with."""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask

from app.extensions import db
from app.models import ApiToken
from app.models._types import utcnow
from app.services import callbacks
from tests.callbacks.conftest import Receiver, deliveries, secret_of, status
from tests.conftest import ApiClient, wait_for
from workers.callbacks import CallbackSender


def cli(app: Flask, *args: str) -> Any:
    result = app.test_cli_runner().invoke(args=list(args))
    assert result.exit_code == 0, result.output
    return result


def test_token_create_prints_the_webhook_secret_before_the_token_and_list_never_shows_it(
    app: Flask, clean: None
) -> None:
    lines = cli(app, "token", "create", "svc").output.strip().splitlines()
    secret_line = next(line for line in lines if line.startswith("webhook secret: "))
    assert lines.index(secret_line) < len(lines) - 1
    token, secret = lines[-1], secret_line.removeprefix("webhook secret: ")
    assert token.startswith("bq_") and secret.startswith("whsec_") and len(secret) > 40

    with app.app_context():
        stored = db.session.scalar(db.select(ApiToken.webhook_secret).where(ApiToken.name == "svc"))
        db.session.remove()
    assert stored == secret  # kept as it is: the server signs with it
    for listing in (cli(app, "token", "list").output, cli(app, "token", "list", "--json").output):
        assert secret not in listing and "whsec_" not in listing


def test_rotate_secret_prints_a_new_secret_once_and_refuses_an_unknown_token(app: Flask, clean: None) -> None:
    first = cli(app, "token", "create", "svc").output.splitlines()[-2].removeprefix("webhook secret: ")
    output = cli(app, "token", "rotate-secret", "svc").output
    rotated = output.strip().splitlines()[-1].removeprefix("webhook secret: ")
    assert rotated.startswith("whsec_") and rotated != first and output.count(rotated) == 1
    unknown = app.test_cli_runner().invoke(args=["token", "rotate-secret", "nobody"])
    assert unknown.exit_code == 1 and "nobody" in unknown.output


@pytest.mark.usefixtures("settled")
def test_a_pending_delivery_is_signed_with_the_secret_rotated_meanwhile(
    api: ApiClient, hooks_app: Flask, sender: CallbackSender, receivers: Callable[..., Receiver], celery_worker: Any
) -> None:
    receiver = receivers(status(500), status(200))
    response = api.post(
        "/batches",
        {"name": "b", "profile_ids": api.profiles(1), "processor": "noop", "callback_url": receiver.url},
    )
    batch_id = response.get_json()["id"]
    wait_for(lambda: len(deliveries(hooks_app)) == 1)
    wait_for(lambda: sender.run_round() is not None and len(receiver.requests) == 1)
    rotated = cli(hooks_app, "token", "rotate-secret", "tests").output.strip().splitlines()[-1]
    rotated = rotated.removeprefix("webhook secret: ")
    wait_for(lambda: sender.run_round() is not None and len(receiver.requests) == 2)

    request = receiver.requests[1]
    fields = dict(part.split("=", 1) for part in request.headers["X-Batchq-Signature"].split(","))
    expected = hmac.new(rotated.encode(), f"{fields['t']}.".encode() + request.body, hashlib.sha256).hexdigest()
    assert fields["v1"] == expected
    assert request.headers["Idempotency-Key"] == f"batch-{batch_id}-done"


@pytest.mark.usefixtures("settled")
def test_a_delivery_past_its_retry_window_is_given_up_logged_and_shown(
    api: ApiClient,
    hooks_app: Flask,
    sender: CallbackSender,
    receivers: Callable[..., Receiver],
    celery_worker: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    receiver = receivers(status(500))
    secret = secret_of(hooks_app, "tests")
    response = api.post(
        "/batches",
        {"name": "b", "profile_ids": api.profiles(1), "processor": "noop", "callback_url": receiver.url},
    )
    batch_id = response.get_json()["id"]
    wait_for(lambda: len(deliveries(hooks_app)) == 1)
    with hooks_app.app_context():  # the first attempt was a day ago
        db.session.execute(db.text("UPDATE callback_deliveries SET created_at = :at"), {"at": utcnow() - timedelta(1)})
        db.session.commit()
        db.session.remove()

    with caplog.at_level(logging.INFO, logger=callbacks.__name__):
        sender.run_round()
    delivery = deliveries(hooks_app)[0]
    assert delivery["gave_up_at"] is not None and delivery["attempts"] == 1
    assert any("given up" in line for line in api.log_of(batch_id))
    assert "given up" in caplog.text and secret not in caplog.text
    sender.run_round()
    assert len(receiver.requests) == 1  # nothing more is sent
