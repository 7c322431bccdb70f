"""Sign-in, the creation form and a batch's live page in Chromium."""

from __future__ import annotations

import re
from typing import Any

from flask import Flask
from playwright.sync_api import Browser, Page, expect

from tests.browser.conftest import PASSWORD, LiveServer
from tests.conftest import ApiClient
from tests.views.conftest import Factory


def test_pages_need_sign_in(browser: Browser, live_server: LiveServer, user: str) -> None:
    context = browser.new_context(base_url=live_server.url)
    try:
        page = context.new_page()
        page.goto("/profiles")
        assert "/login" in page.url
        page.fill("input[name=username]", "alice")
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url("**/profiles")
    finally:
        context.close()


def test_creation_form_shows_field_errors_then_creates(page: Page, app: Flask) -> None:
    make = Factory(app)
    make.profiles(30, prefix="alpha")
    make.profiles(20, prefix="beta")
    make.pause()
    make.batch("queued", 1)
    page.goto("/batches/new")
    page.select_option("#processor", "sleep")
    page.fill("#field-sleep-seconds", "abc")
    page.click("button:has-text('Create batch')")

    expect(page.locator("#name-error")).to_be_visible()
    expect(page.locator("#profile_ids-error")).to_be_visible()
    expect(page.locator("#field-sleep-seconds-error")).to_contain_text("number")
    expect(page.locator("#field-sleep-seconds")).to_have_value("abc")
    expect(page.locator("#processor")).to_have_value("sleep")

    page.fill("#name", "nightly")
    page.fill("#profile-filter", "beta")
    expect(page.locator("#profile-list li:visible")).to_have_count(20)
    page.check("#profile-select-all")
    expect(page.locator("#profile-count")).to_have_text("20 of 50 selected")
    page.fill("#field-sleep-seconds", "0")
    page.click("button:has-text('Create batch')")

    page.wait_for_url("**/batches")
    expect(page.locator("#flashes")).to_contain_text(re.compile(r"“nightly” queued at #2\."))
    expect(page.locator("#batch-table tr", has_text="nightly").locator("td.queue-position")).to_have_text("#2")


def test_batch_page_appends_log_lines_live(page: Page, app: Flask, api: ApiClient, celery_worker: Any) -> None:
    profile_ids = api.profiles(3)
    make = Factory(app)
    make.pause()
    batch = api.batch(profile_ids, processor="sleep", name="watched", seconds=0.2)
    page.goto(f"/batches/{batch['id']}")
    page.wait_for_selector("body[data-live=sse]")
    expect(page.locator(".summary-card .queue-position")).to_have_text("#1")
    lines_before = page.locator("#log-lines li").count()
    api.post("/queue/start")
    # Through the stream only (the page never polls while on it); 15 s is room for a loaded machine.
    expect(page.locator(".summary-card .batch-status")).to_have_text("done", ignore_case=True, timeout=15000)
    expect(page.locator("#log-lines")).to_contain_text("finished: done")
    expect(page.locator("#item-table .item-status")).to_have_text(["succeeded"] * 3)
    assert page.locator("body").get_attribute("data-live") == "sse"
    texts = page.locator("#log-lines li").all_inner_texts()
    assert len(texts) > lines_before
    assert len(texts) == len(set(texts)) or len(
        set(page.locator("#log-lines li").evaluate_all("els => els.map(e => e.dataset.logId)"))
    ) == len(texts)
