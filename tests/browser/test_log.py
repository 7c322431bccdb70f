"""A batch page's log in Chromium: older lines as it is scrolled up, the level filter, the downloads."""

from __future__ import annotations

import json
from pathlib import Path

from flask import Flask
from playwright.sync_api import Page, expect

from app.services import events
from tests.views.conftest import LOG_CYCLE, Factory


def _messages(page: Page) -> list[str]:
    return page.locator("#log-lines li .message").all_inner_texts()


def _scroll_log_to_top(page: Page) -> None:
    page.locator("#log-box").evaluate("box => { box.scrollTop = 0; }")


def test_scrolling_the_log_up_loads_older_lines_until_the_first(page: Page, app: Flask) -> None:
    make = Factory(app)
    batch_id = make.batch("done")
    make.log(batch_id, 450)
    page.goto(f"/batches/{batch_id}")
    expect(page.locator("#log-lines li")).to_have_count(200)
    # The newest lines are in view; the link to older ones is not, until the reader scrolls up.
    at_bottom = "box => box.scrollTop > 0 && box.scrollTop + box.clientHeight >= box.scrollHeight - 4"
    assert page.locator("#log-box").evaluate(at_bottom)
    assert _messages(page)[-1] == "line 450"

    _scroll_log_to_top(page)
    expect(page.locator("#log-lines li")).to_have_count(400)
    # What the reader was looking at stays in view: the box did not jump to the new top.
    assert page.locator("#log-box").evaluate("box => box.scrollTop") > 0

    _scroll_log_to_top(page)
    expect(page.locator("#log-lines li")).to_have_count(451)
    expect(page.locator("#log-older")).to_have_count(0)
    assert _messages(page) == [f"created batch {make.count}"] + [f"line {g}" for g in range(1, 451)]


def test_level_filter_keeps_its_level_in_the_url_and_for_live_lines(page: Page, app: Flask) -> None:
    make = Factory(app)
    batch_id = make.batch("in_progress", 0)
    make.log(batch_id, 12)
    page.goto(f"/batches/{batch_id}")
    page.wait_for_selector("body[data-live=sse]")
    page.select_option("#log-level", "error")
    page.wait_for_url(f"**/batches/{batch_id}?level=error*")
    page.wait_for_selector("body[data-live=sse]")
    assert _messages(page) == ["line 6", "line 12"]

    make.log(batch_id, 12)  # lines 1..12 again: two more errors among them
    with app.app_context():
        events.publish("item", batch_id)
    expect(page.locator("#log-lines li")).to_have_count(4)
    assert _messages(page) == ["line 6", "line 12", "line 6", "line 12"]
    assert set(page.locator("#log-lines li .level").all_inner_texts()) == {"error"}

    page.reload()
    expect(page.locator("#log-level")).to_have_value("error")
    expect(page.locator("#log-lines li")).to_have_count(4)


def test_log_download_links_save_the_whole_log(page: Page, app: Flask, tmp_path: Path) -> None:
    make = Factory(app)
    batch_id = make.batch("done")
    make.log(batch_id, 300)
    page.goto(f"/batches/{batch_id}?level=error")
    with page.expect_download() as txt_download:
        page.click("#log-download-txt")
    txt = txt_download.value
    assert txt.suggested_filename == f"batch-{batch_id}-log.txt"
    lines = Path(txt.path()).read_text().splitlines()
    assert len(lines) == 301  # the whole log, whatever the page filters
    assert lines[-1].endswith(f" {LOG_CYCLE[299 % 6]} line 300")

    with page.expect_download() as jsonl_download:
        page.click("#log-download-jsonl")
    objects = [json.loads(line) for line in Path(jsonl_download.value.path()).read_text().splitlines()]
    assert [o["message"] for o in objects] == [f"created batch {make.count}"] + [f"line {g}" for g in range(1, 301)]
