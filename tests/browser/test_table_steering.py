"""The table's new controls in Chromium: to the top, to a position, drag and drop (mouse and keyboard),
the error line, filters kept in the URL through live updates, times in the browser's zone.

Batches are written by the Factory with the queue paused: nothing runs, so every change these tests
see comes from the control pressed, through the queue manager, or from a hint they publish.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from urllib.parse import parse_qs, urlsplit

import pytest
from flask import Flask
from playwright.sync_api import Browser, Page, expect

from app.services import events
from tests.browser.conftest import LiveServer, signed_in_tab
from tests.browser.test_table import LIVE_MS, _logs, open_table, row
from tests.views.conftest import Factory

KOLKATA = timezone(timedelta(hours=5, minutes=30))


def positions(page: Page, *batch_ids: int) -> list[str]:
    return [row(page, batch_id).locator("td.queue-position").inner_text().strip() for batch_id in batch_ids]


def publish(app: Flask, kind: str, batch_id: int) -> None:
    with app.app_context():
        events.publish(kind, batch_id)


def moves_logged(app: Flask, batch_id: int) -> list[str]:
    return [line.message for line in _logs(app, batch_id) if line.message.startswith("moved")]


@pytest.fixture
def queue_of_four(app: Flask) -> list[int]:
    make = Factory(app)
    make.pause()
    return [make.batch("queued", n, name=f"q{n}") for n in range(1, 5)]


def test_move_to_the_top(page: Page, app: Flask, queue_of_four: list[int]) -> None:
    a, b, c, d = queue_of_four
    open_table(page)
    expect(row(page, a).locator('[data-action="move-top"]')).to_be_disabled()
    row(page, c).locator('[data-action="move-top"]').click()
    expect(row(page, c).locator("td.queue-position")).to_have_text("#1")
    assert positions(page, a, b, c, d) == ["#2", "#3", "#1", "#4"]
    expect(page.locator("#flashes")).to_contain_text(f"Batch {c} is now #1.")
    assert moves_logged(app, c) == ["moved from #3 to #1 by alice"]


def test_controls_of_a_shared_live_render_take_the_pages_token(
    page: Page, app: Flask, queue_of_four: list[int]
) -> None:
    """A live re-fetch is rendered once for every viewer, without anyone's CSRF token in its forms;
    the page's token goes with each form as it is submitted, with htmx or without."""
    a, _b, c, d = queue_of_four
    open_table(page)
    expect(row(page, c).locator("input[name=csrf_token]")).to_have_count(5)  # the full page: one per form
    publish(app, "batch", a)  # a hint: the table region is re-fetched, from the shared render
    expect(row(page, c).locator("input[name=csrf_token]")).to_have_count(0)
    row(page, c).locator('[data-action="move-top"]').click()
    expect(row(page, c).locator("td.queue-position")).to_have_text("#1")
    assert moves_logged(app, c) == ["moved from #3 to #1 by alice"]
    publish(app, "batch", a)
    expect(row(page, d).locator("input[name=csrf_token]")).to_have_count(0)
    row(page, d).locator("input[name=position]").fill("2")
    row(page, d).locator("input[name=position]").press("Enter")
    expect(row(page, d).locator("td.queue-position")).to_have_text("#2")
    assert moves_logged(app, d) == ["moved from #4 to #2 by alice"]


def test_move_to_a_position(page: Page, app: Flask, queue_of_four: list[int]) -> None:
    a, b, c, d = queue_of_four
    open_table(page)
    row(page, a).locator("input[name=position]").fill("3")
    row(page, a).locator('[data-action="move-to"]').click()
    expect(row(page, a).locator("td.queue-position")).to_have_text("#3")
    assert positions(page, a, b, c, d) == ["#3", "#1", "#2", "#4"]
    # Enter in the field submits too.
    row(page, d).locator("input[name=position]").fill("1")
    row(page, d).locator("input[name=position]").press("Enter")
    expect(row(page, d).locator("td.queue-position")).to_have_text("#1")
    assert moves_logged(app, d) == ["moved from #4 to #1 by alice"]


def test_drag_and_drop_with_the_mouse(page: Page, app: Flask, queue_of_four: list[int]) -> None:
    a, b, c, d = queue_of_four
    open_table(page)
    posts: list[str] = []
    page.on("request", lambda request: posts.append(request.url) if request.method == "POST" else None)
    row(page, d).locator("[data-drag-handle]").drag_to(row(page, b).locator("td.batch-name"))
    expect(row(page, d).locator("td.queue-position")).to_have_text("#2")
    assert positions(page, a, b, c, d) == ["#1", "#3", "#4", "#2"]
    assert [urlsplit(url).path for url in posts] == [f"/batches/{d}/move"]  # one call to the queue manager
    assert moves_logged(app, d) == ["moved from #4 to #2 by alice"]
    assert page.locator("body").get_attribute("data-dragging") is None


def test_drag_and_drop_with_the_keyboard(page: Page, app: Flask, queue_of_four: list[int]) -> None:
    a, b, c, d = queue_of_four
    open_table(page)
    announce = page.locator("#drag-announce")
    handle = row(page, a).locator("[data-drag-handle]")
    handle.focus()
    page.keyboard.press("Space")
    expect(announce).to_contain_text(f"Picked up. Batch {a}: #1 of 4.")
    expect(handle).to_have_attribute("aria-pressed", "true")
    page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowDown")
    expect(announce).to_have_text(f"Batch {a}: #3 of 4.")
    expect(handle).to_be_focused()
    page.keyboard.press("Space")
    expect(row(page, a).locator("td.queue-position")).to_have_text("#3")
    assert positions(page, a, b, c, d) == ["#3", "#1", "#2", "#4"]
    assert moves_logged(app, a) == ["moved from #1 to #3 by alice"]

    # Escape puts it back and sends nothing.
    posts: list[str] = []
    page.on("request", lambda request: posts.append(request.url) if request.method == "POST" else None)
    handle = row(page, d).locator("[data-drag-handle]")
    handle.focus()
    page.keyboard.press("Enter")
    page.keyboard.press("ArrowUp")
    page.keyboard.press("Escape")
    expect(announce).to_have_text("Move cancelled.")
    order = page.locator("#batch-table tr[data-batch-id]").evaluate_all("rows => rows.map(r => +r.dataset.batchId)")
    assert order == [b, c, a, d]
    assert posts == [] and moves_logged(app, d) == []


def test_keyboard_drag_survives_a_live_update(page: Page, app: Flask, queue_of_four: list[int]) -> None:
    """A hint during the drag waits for the drop: the rows don't change under it, then the table catches up."""
    a, b, c, d = queue_of_four
    open_table(page)
    handle = row(page, c).locator("[data-drag-handle]")
    handle.focus()
    page.keyboard.press("Space")
    page.keyboard.press("ArrowUp")
    newcomer = Factory(app).batch("queued", 5, name="newcomer")
    publish(app, "created", newcomer)
    # The hint arrived and was held (app.js marks it): the newcomer is not there yet.
    page.wait_for_selector("body[data-live-held]")
    expect(row(page, newcomer)).to_have_count(0)
    expect(handle).to_be_focused()
    page.keyboard.press("Space")
    expect(row(page, c).locator("td.queue-position")).to_have_text("#2")
    expect(row(page, newcomer).locator("td.queue-position")).to_have_text("#5", timeout=LIVE_MS)
    assert positions(page, a, b, c, d) == ["#1", "#3", "#2", "#4"]
    assert page.locator("body").get_attribute("data-live") == "sse"


def test_failed_and_stopped_rows_show_their_error_line(page: Page, app: Flask) -> None:
    make = Factory(app)
    long_error = "http processor: 503 Service Unavailable from the upstream " + "and more detail " * 30
    failed = make.batch("failed", error=long_error)
    stopped = make.batch("stopped", stop_requested_by="bob")
    open_table(page)
    line = row(page, failed).locator(".batch-error")
    expect(line).to_be_visible()
    expect(line).to_have_attribute("title", long_error)
    # One line under the name, cut short: the whole text is on hover only.
    assert line.evaluate("el => el.scrollWidth > el.clientWidth")
    name_box = row(page, failed).locator("td.batch-name a").first.bounding_box()
    line_box = line.bounding_box()
    assert name_box and line_box and line_box["y"] >= name_box["y"] + name_box["height"] - 1
    assert line_box["height"] < 2.5 * 13  # a single line of small text
    expect(row(page, stopped).locator(".batch-error")).to_have_text("Stopped by bob")


def test_filters_stay_in_the_url_and_through_live_updates(page: Page, app: Flask) -> None:
    make = Factory(app)
    make.pause()
    alpha = make.batch("queued", 1, name="alpha one")
    beta = make.batch("queued", 2, name="beta")
    open_table(page)
    page.fill("#filter-q", "alpha")
    page.check("input[name=status][value=queued]")
    page.check("input[name=status][value=failed]")
    page.click("#batch-filters button[type=submit]")
    page.wait_for_url(lambda url: "q=alpha" in url)
    assert parse_qs(urlsplit(page.url).query) == {"q": ["alpha"], "status": ["queued", "failed"]}
    page.wait_for_selector("body[data-live=sse]")
    expect(row(page, alpha)).to_be_visible()
    expect(row(page, beta)).to_have_count(0)

    # Live: a matching batch appears, one that doesn't stay away, the filters stay.
    later = make.batch("queued", 3, name="alpha later")
    other = make.batch("queued", 4, name="gamma")
    publish(app, "created", later)
    publish(app, "created", other)
    expect(row(page, later).locator("td.queue-position")).to_have_text("#3", timeout=LIVE_MS)
    expect(row(page, other)).to_have_count(0)
    expect(row(page, beta)).to_have_count(0)
    # A control pressed on the filtered table keeps it filtered.
    row(page, later).locator('[data-action="move-top"]').click()
    expect(row(page, later).locator("td.queue-position")).to_have_text("#1")
    expect(row(page, beta)).to_have_count(0)
    assert "q=alpha" in page.url
    expect(page.locator("#filter-q")).to_have_value("alpha")
    assert page.locator("body").get_attribute("data-live") == "sse"


@pytest.fixture
def kolkata_tab(browser: Browser, live_server: LiveServer, user: str) -> Iterator[Page]:
    with signed_in_tab(browser, live_server, timezone_id="Asia/Kolkata", locale="en-GB") as tab:
        yield tab


def test_times_show_in_the_browsers_zone_with_utc_on_hover(kolkata_tab: Page, app: Flask) -> None:
    page = kolkata_tab
    at = datetime(2025, 3, 10, 20, 0, tzinfo=UTC)  # 01:30 the next day in India
    batch_id = Factory(app).batch("done", created_at=at, started_at=at, finished_at=at + timedelta(seconds=90))
    open_table(page)
    created = row(page, batch_id).locator("td.batch-created time")
    expect(created).to_have_text("2025-03-11 01:30")
    expect(created).to_have_attribute("title", "2025-03-10 20:00:00 UTC")
    expect(row(page, batch_id).locator("td.batch-finished time")).to_have_text("2025-03-11 01:31")
    # ICU may name the zone by its older alias.
    expect(page.locator("[data-time-zone-note]")).to_have_text(
        re.compile(r"^times in your time zone \(Asia/(Kolkata|Calcutta)\), UTC on hover$")
    )
    # Today's times read HH:MM:SS, local too.
    now = datetime.now(UTC).replace(microsecond=0)
    today = Factory(app).batch("done", created_at=now)
    publish(app, "created", today)
    local = now.astimezone(KOLKATA).strftime("%H:%M:%S")
    expect(row(page, today).locator("td.batch-created time")).to_have_text(local, timeout=LIVE_MS)
