"""The batch page's Callbacks section: each attempt, its status code and error, escaped."""

from __future__ import annotations

from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest
from flask import Flask

from tests.callbacks.conftest import Receiver, deliveries
from tests.conftest import PASSWORD, ApiClient, wait_for
from workers.callbacks import CallbackSender

pytestmark = pytest.mark.usefixtures("settled")


def hostile(handler: BaseHTTPRequestHandler) -> None:
    body = b"<script>alert(1)</script>"
    handler.send_response(500)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def test_batch_page_lists_the_webhook_attempts_escaped(
    api: ApiClient,
    hooks_app: Flask,
    sender: CallbackSender,
    receivers: Callable[..., Receiver],
    user: str,
    celery_worker: Any,
) -> None:
    receiver = receivers(hostile)
    response = api.post(
        "/batches", {"name": "b", "profile_ids": api.profiles(1), "processor": "noop", "callback_url": receiver.url}
    )
    batch_id = response.get_json()["id"]
    plain = api.batch(api.profiles(1, prefix="plain"), name="plain")["id"]
    wait_for(lambda: len(deliveries(hooks_app)) == 1)
    sender.run_round()

    client = hooks_app.test_client()
    assert client.post("/login", data={"username": user, "password": PASSWORD}).status_code == 302
    page = client.get(f"/batches/{batch_id}").get_data(as_text=True)
    assert 'id="callbacks"' in page and receiver.url in page
    assert page.count('class="callback-attempt"') == 1
    assert '<td data-label="Status code" class="callback-status">500</td>' in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>alert(1)" not in page
    assert "next attempt" in page
    assert 'id="callbacks"' not in client.get(f"/batches/{plain}").get_data(as_text=True)
