"""The table's filters kept in the URL and its live fragment, the error line, and the times' markup."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from bs4 import BeautifulSoup
from flask.testing import FlaskClient

from tests.views.conftest import Factory
from tests.views.test_batch_table import rows, table

DAY = datetime(2025, 3, 10, 12, 0, tzinfo=UTC)


def shown_ids(soup: BeautifulSoup) -> list[int]:
    return [row[0] for row in rows(soup)]


def query_of(url: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(url).query)


def test_filters_narrow_the_table_and_stay_in_its_links(client: FlaskClient, make: Factory) -> None:
    running = make.batch("in_progress", 0, name="nightly run", processor="sleep", created_by="bob")
    make.batch("queued", 1, name="weekly", processor="sleep", created_by="bob")
    queued = make.batch("queued", 2, name="Nightly 2", processor="sleep", created_by="bob")
    make.batch("failed", name="nightly noop", processor="noop", created_by="bob")
    make.batch("failed", name="nightly carol", processor="sleep", created_by="carol")
    path = "/batches?q=night&status=queued&status=in_progress&processor=sleep&created_by=bob"
    soup = table(client, path)
    assert rows(soup) == [(running, "in progress", "In Progress"), (queued, "queued", "#2")]  # the true position
    expected = {
        "q": ["night"],
        "status": ["queued", "in_progress"],
        "processor": ["sleep"],
        "created_by": ["bob"],
    }
    # The live fragment, and every control's way back, carry the same filters.
    assert query_of(soup.select_one("#table-region")["data-live-src"]) == expected
    assert query_of(soup.select_one(f'tr[data-batch-id="{queued}"] input[name=next]')["value"]) == expected
    # The form shows them.
    assert soup.select_one("#filter-q")["value"] == "night"
    assert [box["value"] for box in soup.select("input[name=status][checked]")] == ["queued", "in_progress"]
    assert soup.select_one("#filter-processor option[selected]")["value"] == "sleep"
    assert soup.select_one("#filter-created-by")["value"] == "bob"
    assert "match the filters" in soup.select_one(".summary").get_text()


def test_live_fragment_of_a_filtered_table_stays_filtered(client: FlaskClient, make: Factory) -> None:
    make.batch("done", name="alpha")
    beta = make.batch("done", name="beta")
    src = table(client, "/batches?q=bet").select_one("#table-region")["data-live-src"]
    response = client.get(src, headers={"HX-Request": "true"})
    fragment = BeautifulSoup(response.get_data(as_text=True), "html.parser")
    assert fragment.select_one("html") is None and shown_ids(fragment) == [beta]


def test_date_filters_take_whole_days(client: FlaskClient, make: Factory) -> None:
    make.batch("done", created_at=DAY - timedelta(days=1))
    first = make.batch("done", created_at=DAY.replace(hour=0, minute=0))
    last = make.batch("done", created_at=DAY.replace(hour=23, minute=59))
    make.batch("done", created_at=DAY + timedelta(days=1))
    soup = table(client, "/batches?from=2025-03-10&to=2025-03-10")
    assert shown_ids(soup) == [last, first]
    assert soup.select_one("#filter-from")["value"] == "2025-03-10"
    assert query_of(soup.select_one("#table-region")["data-live-src"]) == {"from": ["2025-03-10"], "to": ["2025-03-10"]}


@pytest.mark.parametrize(
    ("query", "key", "label"),
    [
        ("from=10/03/2025", "from", "Created from"),
        ("from=2025-03-09&to=2025-03-08", "to", "to"),  # `from` still applies
        ("status=running", "status", "Status"),
        ("page=0", "page", "Page"),
    ],
)
def test_bad_filter_is_reported_and_left_out(
    client: FlaskClient, make: Factory, query: str, key: str, label: str
) -> None:
    make.batch("done", name="alpha", created_at=DAY)
    beta = make.batch("done", name="beta", created_at=DAY)
    response = client.get(f"/batches?q=bet&{query}")
    assert response.status_code == 422
    soup = BeautifulSoup(response.get_data(as_text=True), "html.parser")
    error = soup.select_one(f"#filter-{key}-error").get_text(" ", strip=True)
    assert error.startswith(f"{label}:") and "not applied" in error
    assert shown_ids(soup) == [beta]  # the good filter still applies
    assert key not in query_of(soup.select_one("#table-region")["data-live-src"])


def test_empty_filter_fields_mean_any(client: FlaskClient, make: Factory) -> None:
    batch_id = make.batch("done")
    response = client.get("/batches?q=&processor=&created_by=&from=&to=")
    assert response.status_code == 200
    soup = BeautifulSoup(response.get_data(as_text=True), "html.parser")
    assert shown_ids(soup) == [batch_id]
    assert soup.select_one("#table-region")["data-live-src"] == "/batches"


def test_paging_keeps_the_filters(client: FlaskClient, make: Factory) -> None:
    for _ in range(51):
        make.batch("failed")
    make.batch("done")
    soup = table(client, "/batches?status=failed")
    assert query_of(soup.select_one("nav.pagination a[rel=next]")["href"]) == {"status": ["failed"], "page": ["2"]}
    second = table(client, "/batches?status=failed&page=2")
    assert len(rows(second)) == 1
    assert query_of(second.select_one("#table-region")["data-live-src"]) == {"status": ["failed"], "page": ["2"]}


def test_running_batch_is_named_above_a_table_that_filters_it_out(client: FlaskClient, make: Factory) -> None:
    running = make.batch("in_progress", 0, name="the long one")
    soup = table(client, "/batches?status=failed")
    assert shown_ids(soup) == []
    link = soup.select_one(".summary a.running-link")
    assert link["href"] == f"/batches/{running}" and "the long one" in link.get_text()


LONG = "processor crashed: " + "x" * 400


@pytest.mark.parametrize(
    ("status", "values", "text"),
    [
        ("failed", {"error": LONG}, LONG),
        ("failed", {"total_items": 3, "failed_items": 2, "succeeded_items": 1}, "2 of 3 items failed"),
        ("stopped", {"stop_requested_by": "bob"}, "Stopped by bob"),
        ("stopped", {"error": "killed: did not stop"}, "killed: did not stop"),
    ],
)
def test_failed_or_stopped_row_shows_its_error_as_a_second_line(
    client: FlaskClient, make: Factory, status: str, values: dict[str, object], text: str
) -> None:
    batch_id = make.batch(status, **values)
    line = table(client).select_one(f'tr[data-batch-id="{batch_id}"] td.batch-name .batch-error')
    assert line.get_text() == text and line["title"] == text  # CSS cuts the line; the title keeps it whole


@pytest.mark.parametrize("status", ["done", "queued", "in_progress", "cancelled"])
def test_other_rows_have_no_error_line(client: FlaskClient, make: Factory, status: str) -> None:
    batch_id = make.batch(status, {"queued": 1, "in_progress": 0}.get(status), error="left over")
    assert table(client).select(f'tr[data-batch-id="{batch_id}"] .batch-error') == []


def test_times_carry_utc_for_the_script_and_the_hover(client: FlaskClient, make: Factory) -> None:
    batch_id = make.batch("done", created_at=DAY, started_at=DAY, finished_at=DAY + timedelta(seconds=5))
    row = table(client).select_one(f'tr[data-batch-id="{batch_id}"]')
    for cell in ("batch-created", "batch-started", "batch-finished"):
        time = row.select_one(f"td.{cell} time[data-local-time=short]")
        assert datetime.fromisoformat(time["datetime"]) >= DAY
        assert time["title"].startswith("2025-03-10 12:00:0") and time["title"].endswith(" UTC")
    assert row.select_one("td.batch-created time").get_text() == "2025-03-10 12:00"  # UTC until app.js runs
