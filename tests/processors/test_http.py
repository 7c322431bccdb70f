"""The http processor through a real batch and worker: its calls go through the outbound checks,
so a listed name rebound to 127.0.0.1 and a redirect off the list fail the item and reach nothing."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest
from flask import Flask

from app.services import outbound
from tests.conftest import ApiClient, wait_for
from tests.services.test_outbound import Handle, LocalServer, ok, serve  # noqa: F401  (serve is a fixture)


def _finished_items(api: ApiClient, batch_id: int) -> list[dict[str, Any]]:
    wait_for(lambda: api.batch_of(batch_id)["status"] in ("done", "failed"), timeout=30)
    return api.items_of(batch_id)


def test_a_listed_name_rebound_to_loopback_fails_the_item_unsent(
    api: ApiClient,
    app: Flask,
    celery_worker: Any,
    serve: Callable[[Handle], LocalServer],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = serve(ok)
    monkeypatch.setitem(app.config, "HTTP_PROCESSOR_ALLOWED_HOSTS", ("hooks.example.com",))
    monkeypatch.setattr(outbound, "resolve", lambda host, port: [ipaddress.ip_address("127.0.0.1")])
    batch = api.batch(api.profiles(1), "http", url=f"http://hooks.example.com:{server.port}/hook", timeout=5)
    [item] = _finished_items(api, batch["id"])
    assert item["status"] == "failed"
    assert "resolves to 127.0.0.1" in item["error"]
    assert server.requests == []

    # Listing the address itself is how an operator allows it on purpose.
    monkeypatch.setitem(app.config, "HTTP_PROCESSOR_ALLOWED_HOSTS", ("hooks.example.com", "127.0.0.1/32"))
    batch = api.batch(api.profiles(1, prefix="q"), "http", url=f"http://hooks.example.com:{server.port}/hook")
    assert [i["status"] for i in _finished_items(api, batch["id"])] == ["succeeded"]
    assert [r["headers"]["Host"] for r in server.requests] == [f"hooks.example.com:{server.port}"]


def test_a_redirect_fails_the_item_and_its_target_is_never_called(
    api: ApiClient,
    app: Flask,
    celery_worker: Any,
    serve: Callable[[Handle], LocalServer],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    elsewhere = serve(ok)

    def redirect(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(302)
        handler.send_header("Location", f"http://169.254.169.254:{elsewhere.port}/latest/meta-data")
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    server = serve(redirect)
    monkeypatch.setitem(app.config, "HTTP_PROCESSOR_ALLOWED_HOSTS", ("127.0.0.1",))
    batch = api.batch(api.profiles(1), "http", url=f"http://127.0.0.1:{server.port}/hook", timeout=5)
    [item] = _finished_items(api, batch["id"])
    assert item["status"] == "failed" and item["error"].startswith("HTTP 302")
    assert len(server.requests) == 1 and elsewhere.requests == []
