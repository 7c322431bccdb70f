"""A batch page's log: the newest page, older pages with and without scripts, the level filter, downloads."""

from __future__ import annotations

import json

from bs4 import BeautifulSoup
from flask import Flask
from flask.testing import FlaskClient

from app.views.batches import LOG_PAGE
from tests.views.conftest import LOG_CYCLE, Factory


def _soup(client: FlaskClient, url: str) -> BeautifulSoup:
    response = client.get(url)
    assert response.status_code == 200
    return BeautifulSoup(response.get_data(as_text=True), "html.parser")


def _messages(soup: BeautifulSoup) -> list[str]:
    return [li.select_one(".message").get_text() for li in soup.select("#log-lines li")]


def test_batch_page_shows_the_newest_page_and_links_the_older_one(client: FlaskClient, make: Factory) -> None:
    batch_id = make.batch("done")
    make.log(batch_id, 450)
    soup = _soup(client, f"/batches/{batch_id}")
    assert _messages(soup) == [f"line {g}" for g in range(251, 451)]
    older = soup.select_one("#log-older")
    first = soup.select_one("#log-lines li")["data-log-id"]
    assert older["href"] == f"/batches/{batch_id}?log_before={first}#log-heading"
    assert older["data-older-src"] == f"/batches/{batch_id}/log"
    assert soup.select_one("#log-lines")["data-live-append"] == "true"


def test_older_lines_link_pages_back_without_scripts(client: FlaskClient, make: Factory) -> None:
    batch_id = make.batch("done")
    make.log(batch_id, 450)
    first = _soup(client, f"/batches/{batch_id}").select_one("#log-lines li")["data-log-id"]
    older = _soup(client, f"/batches/{batch_id}?log_before={first}")
    assert _messages(older) == [f"line {g}" for g in range(51, 251)]
    # A page of the past is not live, and leads back to the newest lines.
    assert not older.select_one("#log-lines").has_attr("data-live-src")
    assert older.select_one("#log-newest")["href"] == f"/batches/{batch_id}#log-heading"
    oldest = _soup(client, older.select_one("#log-older")["href"])
    assert _messages(oldest) == [f"created batch {make.count}"] + [f"line {g}" for g in range(1, 51)]
    assert oldest.select_one("#log-older") is None


def test_log_fragment_before_a_line_is_the_page_before_it_and_says_if_more_are_left(
    client: FlaskClient, make: Factory
) -> None:
    batch_id = make.batch("done")
    make.log(batch_id, LOG_PAGE + 20)
    first = _soup(client, f"/batches/{batch_id}").select_one("#log-lines li")["data-log-id"]
    response = client.get(f"/batches/{batch_id}/log?before={first}")
    assert response.headers["X-Log-Older"] == "0"
    soup = BeautifulSoup(response.get_data(as_text=True), "html.parser")
    assert [li.select_one(".message").get_text() for li in soup.select("li")][-2:] == ["line 19", "line 20"]
    response = client.get(f"/batches/{batch_id}/log?before={int(first) - 5}")
    assert response.headers["X-Log-Older"] == "0"
    make.log(batch_id, LOG_PAGE)
    last = _soup(client, f"/batches/{batch_id}").select("#log-lines li")[-1]["data-log-id"]
    assert client.get(f"/batches/{batch_id}/log?before={last}").headers["X-Log-Older"] == "1"


def test_level_filter_is_kept_in_the_url_and_applies_to_every_read(client: FlaskClient, make: Factory) -> None:
    batch_id = make.batch("done")
    make.log(batch_id, 900)
    soup = _soup(client, f"/batches/{batch_id}?level=warning")
    assert soup.select_one("#log-level option[selected]")["value"] == "warning"
    shown = {li["class"][0] for li in soup.select("#log-lines li")}
    assert shown == {"log-warning", "log-error"}
    assert len(soup.select("#log-lines li")) == LOG_PAGE
    assert soup.select_one("#log-lines")["data-live-src"] == f"/batches/{batch_id}/log?level=warning"
    assert soup.select_one("#log-older")["data-older-src"] == f"/batches/{batch_id}/log?level=warning"
    assert "level=warning" in soup.select_one("#log-older")["href"]
    live = BeautifulSoup(
        client.get(f"/batches/{batch_id}/log?level=error&after=0").get_data(as_text=True), "html.parser"
    )
    assert [li.select_one(".message").get_text() for li in live.select("li")] == [
        f"line {g}" for g in range(1, 901) if LOG_CYCLE[(g - 1) % 6] == "error"
    ]


def test_unknown_level_on_the_page_shows_every_line(client: FlaskClient, make: Factory) -> None:
    batch_id = make.batch("done")
    make.log(batch_id, 6)
    soup = _soup(client, f"/batches/{batch_id}?level=loud")
    assert len(_messages(soup)) == 7
    assert soup.select_one("#log-level option[selected]")["value"] == ""


def test_page_downloads_stream_the_whole_log_under_the_browser_session(client: FlaskClient, make: Factory) -> None:
    batch_id = make.batch("done")
    make.log(batch_id, 30)
    soup = _soup(client, f"/batches/{batch_id}")
    txt = client.get(soup.select_one("#log-download-txt")["href"])
    assert txt.is_streamed
    assert txt.headers["Content-Disposition"] == f'attachment; filename="batch-{batch_id}-log.txt"'
    lines = txt.get_data(as_text=True).splitlines()
    assert len(lines) == 31 and lines[-1].endswith(" error line 30")
    jsonl = client.get(soup.select_one("#log-download-jsonl")["href"])
    assert [json.loads(line)["message"] for line in jsonl.get_data(as_text=True).splitlines()][-1] == "line 30"
    assert client.get(f"/batches/{batch_id + 1}/logs.txt").status_code == 404


def test_page_downloads_need_sign_in(app: Flask, make: Factory) -> None:
    batch_id = make.batch("done")
    response = app.test_client().get(f"/batches/{batch_id}/logs.jsonl")
    assert response.status_code == 302 and "/login" in response.headers["Location"]
