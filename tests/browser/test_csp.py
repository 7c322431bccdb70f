"""Every page runs under the Content-Security-Policy with nothing blocked: no inline script or style is left."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from playwright.sync_api import Browser, Page, expect

from tests.browser.conftest import LiveServer, sign_in
from tests.views.conftest import Factory

# Runs before any page script, outside the policy's reach (the browser injects it itself).
RECORD_VIOLATIONS = """
window.__violations = [];
document.addEventListener('securitypolicyviolation', (e) => {
  window.__violations.push(`${e.effectiveDirective} ${e.blockedURI || 'inline'} at ${e.sourceFile}:${e.lineNumber}`);
});
"""


class Recorder:
    """A tab that keeps every CSP violation: the page's own events, and the console's reports of them."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.console: list[str] = []
        page.on("console", self._console)

    def _console(self, message: Any) -> None:
        if message.type == "error" and "Content Security Policy" in message.text:
            self.console.append(message.text)

    def visit(self, path: str) -> list[str]:
        """Load `path`, let its scripts and first live refresh run, and return the violations so far."""
        response = self.page.goto(path)
        assert response is not None and response.ok, f"{path}: {response and response.status}"
        assert "script-src 'self'" in response.headers["content-security-policy"]
        self.page.wait_for_load_state("load")
        return self.violations()

    def violations(self) -> list[str]:
        return list(self.page.evaluate("window.__violations || []")) + self.console


@pytest.fixture
def recorder(browser: Browser, live_server: LiveServer, user: str) -> Iterator[Recorder]:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, base_url=live_server.url)
    context.set_default_timeout(15000)
    context.add_init_script(RECORD_VIOLATIONS)
    try:
        yield Recorder(context.new_page())
    finally:
        context.close()


def test_csp_no_page_breaks_the_policy(recorder: Recorder, live_server: LiveServer, app: Flask, clean: None) -> None:
    make = Factory(app)
    profiles = make.profiles(4)
    running = make.batch("in_progress", 0, profile_ids=profiles, succeeded_items=1, failed_items=1)
    queued = make.batch("queued", 1, profile_ids=profiles[:2])
    make.batch("queued", 2, profile_ids=profiles[:1])
    done = make.batch("done", profile_ids=profiles, succeeded_items=3, failed_items=1)
    page = recorder.page

    assert recorder.visit("/login") == []
    sign_in(page, live_server.url)
    paths = [
        "/batches",
        "/batches/new",
        f"/batches/new?from={done}",
        f"/batches/{running}",
        f"/batches/{done}",
        f"/batches/{running}/stop",
        f"/batches/{queued}/cancel",
        "/profiles",
        f"/profiles/{profiles[0]}/edit",
        f"/profiles/{profiles[0]}/delete",
    ]
    for path in paths:
        assert recorder.visit(path) == [], path

    # htmx at work under the policy: a move swaps the table region in, a confirmation dialog is answered.
    recorder.visit("/batches")
    page.locator(f'tr[data-batch-id="{queued}"] [data-action="move-down"]').click()
    expect(page.locator(f'tr[data-batch-id="{queued}"] td.queue-position')).to_have_text("#2")
    page.once("dialog", lambda dialog: dialog.accept())
    page.locator(f'tr[data-batch-id="{queued}"] [data-action="cancel"]').click()
    expect(page.locator(f'tr[data-batch-id="{queued}"] td.batch-status')).to_have_text("cancelled", ignore_case=True)
    # The progress bars are drawn without inline style: the running batch's shows 1 of 4 succeeded.
    bar = page.locator(f'tr[data-batch-id="{running}"] rect.bar-ok')
    assert bar.get_attribute("width") == "25.0"
    assert recorder.violations() == []


def test_csp_the_recorder_sees_an_inline_style_and_script(recorder: Recorder, live_server: LiveServer) -> None:
    """The check above would pass on a recorder that saw nothing: this one must see the policy at work."""
    recorder.visit("/login")
    recorder.page.evaluate(
        """() => {
          document.body.insertAdjacentHTML('beforeend', '<span style="color: red">x</span>');
          const script = document.createElement('script');
          script.textContent = 'window.__ran = true';
          document.body.appendChild(script);
        }"""
    )
    recorder.page.wait_for_function("window.__violations.length >= 2")
    found = " ".join(recorder.violations())
    assert "style-src" in found and "script-src" in found
    assert recorder.page.evaluate("window.__ran === undefined")
