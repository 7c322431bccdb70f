"""The batch table: positions, the Start button, order, paging, filter."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from bs4 import BeautifulSoup
from flask import Flask
from flask.testing import FlaskClient

from app.extensions import db
from app.models._types import utcnow
from app.services import batches
from app.services.batches import BatchFilter
from tests.conftest import ApiClient
from tests.views.conftest import Factory


def table(client: FlaskClient, path: str = "/batches") -> BeautifulSoup:
    response = client.get(path)
    assert response.status_code == 200
    return BeautifulSoup(response.get_data(as_text=True), "html.parser")


def rows(soup: BeautifulSoup) -> list[tuple[int, str, str]]:
    """(id, status cell, position cell) of each row, in page order."""
    return [
        (
            int(tr["data-batch-id"]),
            tr.select_one("td.batch-status").get_text(strip=True),
            tr.select_one("td.queue-position").get_text(strip=True),
        )
        for tr in soup.select("#batch-table tr[data-batch-id]")
    ]


@pytest.mark.parametrize(
    ("status", "position", "shown_status", "shown_position"),
    [
        ("queued", 1, "queued", "#1"),
        ("queued", 7, "queued", "#7"),
        ("in_progress", 0, "in progress", "In Progress"),
        ("stopping", 0, "stopping", "Stopping"),
        ("done", None, "done", "-"),
        ("failed", None, "failed", "-"),
        ("stopped", None, "stopped", "-"),
        ("cancelled", None, "cancelled", "-"),
    ],
)
def test_table_queue_position_cell(
    client: FlaskClient, make: Factory, status: str, position: int | None, shown_status: str, shown_position: str
) -> None:
    ahead = [make.batch("queued", n) for n in range(1, position)] if status == "queued" and position else []
    batch_id = make.batch(status, position)
    assert rows(table(client))[len(ahead) :] == [(batch_id, shown_status, shown_position)]


def test_table_orders_running_then_queue_then_newest(client: FlaskClient, make: Factory) -> None:
    old_done = make.batch("done")
    queued_2 = make.batch("queued", 2)
    running = make.batch("in_progress", 0)
    new_failed = make.batch("failed")
    queued_1 = make.batch("queued", 1)
    shown = rows(table(client))
    assert [row[0] for row in shown] == [running, queued_1, queued_2, new_failed, old_done]
    assert [row[2] for row in shown] == ["In Progress", "#1", "#2", "-", "-"]


def test_table_has_the_columns_and_accessible_headers(client: FlaskClient, make: Factory) -> None:
    make.batch("queued", 1)
    soup = table(client)
    headers = [th.get_text(strip=True) for th in soup.select("#batch-table thead th")]
    assert headers == [
        "ID",
        "Name",
        "Status",
        "Queue Position",
        "Progress",
        "Created",
        "Started",
        "Finished",
        "Duration",
        "Actions",
    ]
    assert all(th.get("scope") == "col" for th in soup.select("#batch-table thead th"))
    assert soup.select_one("#batch-table caption") is not None


def test_table_progress_shows_succeeded_failed_total(client: FlaskClient, make: Factory) -> None:
    ids = make.profiles(4)
    make.batch("in_progress", 0, profile_ids=ids, succeeded_items=2, failed_items=1)
    cell = table(client).select_one("td.batch-progress")
    assert cell.select_one("[role=progressbar]")["aria-valuenow"] == "3"
    assert cell.select_one("[role=progressbar]")["aria-valuemax"] == "4"
    assert re.sub(r"\s+", "", cell.select_one(".progress-text").get_text()) == "2/1/4"


def test_table_row_actions_carry_data_action(client: FlaskClient, make: Factory) -> None:
    running = make.batch("in_progress", 0)
    first = make.batch("queued", 1)
    last = make.batch("queued", 2)
    done = make.batch("done")
    soup = table(client)

    def actions(batch_id: int) -> dict[str, bool]:
        row = soup.select_one(f'tr[data-batch-id="{batch_id}"]')
        return {b["data-action"]: b.has_attr("disabled") for b in row.select("[data-action]")}

    assert actions(running) == {"stop": False}
    moves = {"move-to": False, "cancel": False}
    assert actions(first) == {"move-top": True, "move-up": True, "move-down": False, **moves}
    assert actions(last) == {"move-top": False, "move-up": False, "move-down": True, **moves}
    assert actions(done) == {"run-again": False}


def start_button(client: FlaskClient) -> tuple[bool, str | None]:
    """(disabled, what pressing it does: 'post /queue/start', 'get /batches/new' or None)."""
    button = table(client).select_one("#start-button")
    form = button.find_parent("form")
    action = f"{form.get('method', 'get').lower()} {form['action']}" if form else None
    return button.has_attr("disabled"), action


@pytest.mark.parametrize(
    ("setup", "disabled", "action"),
    [
        ("running", True, None),
        ("running_and_queued", True, None),
        ("stopping_paused", True, None),
        ("paused_with_queue", False, "post /queue/start"),
        ("paused_empty", False, "post /queue/start"),
        ("empty", False, "get /batches/new"),
        ("only_finished", False, "get /batches/new"),
        ("queued_not_paused_idle", False, "post /queue/start"),  # a lost promotion: Start promotes the head
    ],
)
def test_start_button_follows_start_enabled(
    client: FlaskClient, make: Factory, api: ApiClient, setup: str, disabled: bool, action: str | None
) -> None:
    if setup in ("running", "running_and_queued"):
        make.batch("in_progress", 0)
    if setup == "running_and_queued":
        make.batch("queued", 1)
    if setup == "stopping_paused":
        make.batch("stopping", 0)
        make.batch("queued", 1)
        make.pause()
    if setup in ("paused_with_queue", "paused_empty"):
        make.pause()
    if setup in ("paused_with_queue", "queued_not_paused_idle"):
        make.batch("queued", 1)
    if setup == "only_finished":
        make.batch("done")
    assert api.get("/queue").get_json()["start_enabled"] is not disabled
    assert start_button(client) == (disabled, action)


def test_paused_banner_says_who_stopped_it(client: FlaskClient, make: Factory) -> None:
    assert table(client).select_one("#queue-banner") is None
    make.pause(by="bob")
    banner = table(client).select_one("#queue-banner")
    assert "Queue paused" in banner.get_text() and "stopped by bob" in banner.get_text()


def test_table_is_paginated_and_filtered(client: FlaskClient, make: Factory) -> None:
    for _ in range(55):
        make.batch("done")
    make.batch("failed")
    first = table(client)
    assert len(first.select("tr[data-batch-id]")) == 50
    assert first.select_one("nav.pagination a[rel=next]")["href"] == "/batches?page=2"
    second = table(client, "/batches?page=2")
    assert len(second.select("tr[data-batch-id]")) == 6
    failed = table(client, "/batches?status=failed")
    assert [row[1] for row in rows(failed)] == ["failed"]
    # A bad filter is reported and left out (422), never half-applied.
    response = client.get("/batches?status=bogus")
    assert response.status_code == 422
    soup = BeautifulSoup(response.get_data(as_text=True), "html.parser")
    assert "Status:" in soup.select_one("#filter-status-error").get_text()
    assert len(rows(soup)) == 50


def test_table_fragment_for_htmx(client: FlaskClient, make: Factory) -> None:
    make.batch("queued", 1)
    response = client.get("/batches", headers={"HX-Request": "true"})
    html = response.get_data(as_text=True)
    assert 'id="batch-table"' in html and "<html" not in html and 'id="start-button"' in html


def test_table_page_carries_the_live_hooks(client: FlaskClient) -> None:
    body = table(client).select_one("body")
    assert body["data-live-url"] == "/live/events"
    assert body["data-last-event-id"].isdigit()
    assert table(client).select_one("#table-region")["data-live-src"] == "/batches"


@pytest.mark.parametrize(
    ("status", "values", "phase"),
    [
        ("stopping", {"stop_requested_by": "bob"}, "Stop requested by bob; waiting for the run to halt"),
        ("stopped", {"stop_requested_by": "bob"}, "Stopped by bob"),
        (
            "stopped",
            {"stop_requested_by": "bob", "error": "killed: did not stop within 30s of the stop"},
            "killed: did not stop within 30s of the stop",
        ),
    ],
)
def test_table_shows_the_phase_of_a_stop(
    client: FlaskClient, make: Factory, status: str, values: dict[str, str], phase: str
) -> None:
    """Stopping: the phase beside the (absent) controls; stopped: the reason as the row's error line."""
    batch_id = make.batch(status, 0 if status == "stopping" else None, **values)
    row = table(client).select_one(f'tr[data-batch-id="{batch_id}"]')
    shown = row.select_one(".phase" if status == "stopping" else ".batch-error")
    assert shown.get_text(strip=True) == phase
    # Nothing to press while it stops; once stopped, only Resume.
    pressable = [button["data-action"] for button in row.select("td.batch-actions button")]
    assert pressable == ([] if status == "stopping" else ["resume"])


def test_table_asks_for_refreshes_twice_a_second_at_most_progress_once(client: FlaskClient) -> None:
    # The batch page keeps the script's gaps (none; 300 ms for progress); the table, open on many screens,
    # asks for 500 ms between any two refreshes and 1 s for progress alone.
    page = table(client).body
    assert (page["data-live-gap"], page["data-live-item-gap"]) == ("500", "1000")
    other = BeautifulSoup(client.get("/profiles").get_data(as_text=True), "html.parser").body
    assert other.get("data-live-item-gap") is None and other.get("data-live-gap") is None


@pytest.mark.parametrize(
    "filters", [None, BatchFilter(processor="noop"), BatchFilter(statuses=("queued", "done"))], ids=str
)
def test_table_pages_read_in_parts_cover_the_table_order_once(
    app: Flask, make: Factory, filters: BatchFilter | None
) -> None:
    """Each page is read as its parts (running, queued, the rest): every page boundary, wherever it falls."""
    same_time = utcnow() - timedelta(hours=1)
    running = make.batch("in_progress", 0)
    queued = [make.batch("queued", n) for n in (3, 1, 2)]  # ranks out of creation order
    sleeper = make.batch("queued", 4, processor="sleep")
    done = [make.batch("done"), make.batch("done", created_at=same_time), make.batch("done", created_at=same_time)]
    failed = [make.batch("failed"), make.batch("failed", created_at=same_time - timedelta(seconds=1))]
    newest_first = [failed[0], done[0], done[2], done[1], failed[1]]  # ties on created_at: the higher id first
    expected = [running, queued[1], queued[2], queued[0], sleeper, *newest_first]
    if filters is not None and filters.processor:
        expected.remove(sleeper)
    if filters is not None and filters.statuses:
        expected = [batch_id for batch_id in expected if batch_id in (*queued, sleeper, *done)]
    with app.app_context():
        whole = batches.list_batches(1, 500, filters)
        assert [batch.id for batch in whole.items] == expected and whole.total == len(expected)
        for per_page in (1, 2, 3, 4):
            paged = [
                batch.id
                for page in range(1, len(expected) // per_page + 2)
                for batch in batches.list_batches(page, per_page, filters).items
            ]
            assert paged == expected, per_page
        db.session.remove()


def test_creators_are_everyone_who_created_a_batch_once_each_in_order(app: Flask, make: Factory) -> None:
    for name in ("zoe", "token:ci", "ada", "zoe", "ada", None, "cli:root"):
        make.batch("done", created_by=name)
    with app.app_context():
        assert batches.creators() == ["ada", "cli:root", "token:ci", "zoe"]
        db.session.remove()
