"""End-to-end fixtures: the app served by a real threaded server, driven by Debian's Chromium.

No browser is downloaded: Playwright launches /usr/bin/chromium (`apt-get install
chromium` when it is missing; .ci/run does). The server is the session's app on
127.0.0.1 with CSRF checks on, as in production.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from playwright import sync_api
from werkzeug.serving import BaseWSGIServer, make_server

from app.live.hub import Hub
from bench.chromium import CHROMIUM, CHROMIUM_ARGS
from tests.conftest import PASSWORD

# A user's machine may lack Chromium: the browser tests are then skipped with the
# reason. CI sets REQUIRE_CHROMIUM=1, so that there a missing browser fails the run.
if not Path(CHROMIUM).exists():  # pragma: no cover - .ci/run installs it
    message = f"{CHROMIUM} is missing: apt-get install -y chromium"
    if os.environ.get("REQUIRE_CHROMIUM") == "1":
        pytest.fail(message, pytrace=False)
    pytest.skip(message, allow_module_level=True)


class LiveServer:
    """The app on a real HTTP server in a thread of this process."""

    def __init__(self, app: Flask) -> None:
        self.server: BaseWSGIServer = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, name="live-server", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self, app: Flask) -> None:
        hub = app.extensions["live_hub"]
        hub.shutdown()  # ends the open streams, so the server's threads finish
        self.server.shutdown()
        self.server.server_close()
        # Later tests in this session get a fresh hub (a shut one refuses every stream).
        app.extensions["live_hub"] = Hub(hub.redis_url, hub.channel, hub.max_streams)


@pytest.fixture(scope="session")
def live_server(app: Flask) -> Iterator[LiveServer]:
    server = LiveServer(app)
    server.start()
    try:
        yield server
    finally:
        server.stop(app)


@pytest.fixture(autouse=True)
def csrf_checks(app: Flask) -> Iterator[None]:
    """CSRF checks on during each browser test (the session's app runs with them off)."""
    saved = app.config["WTF_CSRF_ENABLED"]
    app.config["WTF_CSRF_ENABLED"] = True
    yield
    app.config["WTF_CSRF_ENABLED"] = saved


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


def sign_in(page: object, base_url: str, username: str = "alice") -> None:
    page.goto(f"{base_url}/login")  # type: ignore[attr-defined]
    page.fill("input[name=username]", username)  # type: ignore[attr-defined]
    page.fill("input[name=password]", PASSWORD)  # type: ignore[attr-defined]
    page.click("button[type=submit]")  # type: ignore[attr-defined]
    page.wait_for_url(f"{base_url}/batches")  # type: ignore[attr-defined]


@contextmanager
def signed_in_tab(browser: Any, live_server: LiveServer, **context_options: Any) -> Iterator[Any]:
    """A fresh tab at 1280 px in a context of its own (time zone, locale...), signed in as alice."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, base_url=live_server.url, **context_options)
    context.set_default_timeout(15000)  # room for a loaded machine: waits that pass end at once
    tab = context.new_page()
    sign_in(tab, live_server.url)
    try:
        yield tab
    finally:
        context.close()


@pytest.fixture
def page(browser: object, live_server: LiveServer, user: str) -> Iterator[object]:
    """A fresh tab at 1280 px, signed in as alice."""
    with signed_in_tab(browser, live_server) as tab:
        yield tab
