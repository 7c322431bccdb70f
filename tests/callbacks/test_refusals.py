"""Where a webhook may not go: hosts refused when the batch is created, and at every attempt a name that
resolves somewhere unlisted, a redirect (never followed) and a receiver too slow (cut at CALLBACK_TIMEOUT)."""

from __future__ import annotations

import ipaddress
import itertools
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest
from flask import Flask

from app.extensions import db
from app.services import outbound
from tests.callbacks.conftest import Receiver, deliveries, status
from tests.conftest import ApiClient, wait_for
from workers.callbacks import CallbackSender

_names = itertools.count()


def body(api: ApiClient, callback_url: Any) -> dict[str, Any]:
    profile_ids = api.profiles(1, prefix=f"r{next(_names)}")
    return {"name": "hooked", "profile_ids": profile_ids, "processor": "noop", "callback_url": callback_url}


def batch_count(app: Flask) -> int:
    with app.app_context():
        count = db.session.scalar(db.text("SELECT count(*) FROM batches"))
        db.session.remove()
    return int(count or 0)


@pytest.mark.parametrize(
    "callback_url, message",
    [
        ("http://example.com/hook", "not in CALLBACK_ALLOWED_HOSTS"),
        ("http://10.0.0.1/hook", "not in CALLBACK_ALLOWED_HOSTS"),
        ("ftp://127.0.0.1/hook", "URL"),
        ("not a url", "URL"),
        ("http://127.0.0.1/" + "a" * 2000, "Longer than maximum length"),
        (42, "Not a valid URL"),
    ],
)
def test_callback_url_off_the_allow_list_or_malformed_is_refused_naming_the_field_and_nothing_is_stored(
    api: ApiClient, hooks_app: Flask, callback_url: Any, message: str
) -> None:
    before = batch_count(hooks_app)
    response = api.post("/batches", body(api, callback_url))
    assert response.status_code == 422, response.get_json()
    error = response.get_json()["error"]
    assert list(error["fields"]) == ["callback_url"]
    assert message in " ".join(error["fields"]["callback_url"])
    assert batch_count(hooks_app) == before


def test_no_callback_host_is_allowed_unless_configured(api: ApiClient, app: Flask) -> None:
    assert app.config["CALLBACK_ALLOWED_HOSTS"] == ()
    response = api.post("/batches", body(api, "http://127.0.0.1/hook"))
    assert response.status_code == 422 and "callback_url" in response.get_json()["error"]["fields"]


def test_a_token_without_a_webhook_secret_cannot_ask_for_a_callback(api: ApiClient, hooks_app: Flask) -> None:
    with hooks_app.app_context():
        db.session.execute(db.text("UPDATE api_tokens SET webhook_secret = NULL"))
        db.session.commit()
        db.session.remove()
    response = api.post("/batches", body(api, "http://127.0.0.1/hook"))
    assert response.status_code == 422
    assert "rotate-secret" in response.get_json()["error"]["fields"]["callback_url"][0]
    assert batch_count(hooks_app) == 0


def ended_with_callback(api: ApiClient, app: Flask, url: str) -> int:
    response = api.post("/batches", body(api, url))
    assert response.status_code == 201, response.get_json()
    batch_id = int(response.get_json()["id"])
    wait_for(lambda: api.batch_of(batch_id)["status"] == "done")
    wait_for(lambda: len(deliveries(app)) == 1)
    return batch_id


def attempts(api: ApiClient, batch_id: int) -> list[dict[str, Any]]:
    return list(api.get(f"/batches/{batch_id}/callbacks").get_json()["items"])


@pytest.mark.usefixtures("settled")
def test_a_redirect_is_an_answer_never_followed(
    api: ApiClient, hooks_app: Flask, sender: CallbackSender, receivers: Callable[..., Receiver], celery_worker: Any
) -> None:
    elsewhere = receivers(status(200))
    redirecting = receivers(status(307, {"Location": elsewhere.url}))
    batch_id = ended_with_callback(api, hooks_app, redirecting.url)

    sender.run_round()
    assert len(redirecting.requests) == 1 and elsewhere.requests == []
    [attempt] = attempts(api, batch_id)
    assert attempt["status_code"] == 307 and "307" in attempt["error"]
    delivery = deliveries(hooks_app)[0]
    assert delivery["delivered_at"] is None and delivery["gave_up_at"] is None and delivery["attempts"] == 1


@pytest.mark.usefixtures("settled")
def test_a_slow_receiver_is_cut_at_the_timeout_and_retried_later(
    api: ApiClient,
    hooks_app: Flask,
    sender: CallbackSender,
    receivers: Callable[..., Receiver],
    celery_worker: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(hooks_app.config, "CALLBACK_TIMEOUT", 0.5)
    holder: list[Receiver] = []

    def hold(handler: BaseHTTPRequestHandler) -> None:
        # Headers at once, then the body a byte at a time: per-read timeouts would never fire.
        handler.send_response(200)
        handler.send_header("Content-Length", "1000")
        handler.end_headers()
        for _ in range(1000):
            if holder[0].release.wait(0.05):
                return
            handler.wfile.write(b".")
            handler.wfile.flush()

    slow = receivers(hold)
    holder.append(slow)
    batch_id = ended_with_callback(api, hooks_app, slow.url)

    began = time.monotonic()
    sender.run_round()
    took = time.monotonic() - began
    assert 0.5 <= took < 2.0, took
    [attempt] = attempts(api, batch_id)
    assert attempt["status_code"] is None and "within 0.5s" in attempt["error"]
    assert deliveries(hooks_app)[0]["delivered_at"] is None


@pytest.mark.usefixtures("settled")
def test_a_listed_name_resolving_to_an_unlisted_private_address_is_not_called(
    api: ApiClient,
    hooks_app: Flask,
    sender: CallbackSender,
    receivers: Callable[..., Receiver],
    celery_worker: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    receiver = receivers(status(200))
    monkeypatch.setitem(hooks_app.config, "CALLBACK_ALLOWED_HOSTS", ("hooks.example",))
    port = receiver.httpd.server_port
    batch_id = ended_with_callback(api, hooks_app, f"http://hooks.example:{port}/hook")
    # DNS rebinding: the listed name now points at this machine.
    monkeypatch.setattr(outbound, "resolve", lambda host, port: [ipaddress.ip_address("127.0.0.1")])

    sender.run_round()
    assert receiver.requests == []
    [attempt] = attempts(api, batch_id)
    assert attempt["status_code"] is None and "not allowed" in attempt["error"]
