"""One batch's page: status, position, timings, progress, items and log."""

from __future__ import annotations

from bs4 import BeautifulSoup
from flask import Flask
from flask.testing import FlaskClient

from app.extensions import db
from app.models import BatchLog
from tests.views.conftest import Factory


def test_detail_page_shows_summary_items_and_log(client: FlaskClient, make: Factory) -> None:
    ids = make.profiles(3)
    batch_id = make.batch("queued", 1, profile_ids=ids, name="nightly")
    soup = BeautifulSoup(client.get(f"/batches/{batch_id}").get_data(as_text=True), "html.parser")
    assert soup.select_one("h1").get_text() == f"Batch {batch_id}: nightly"
    assert soup.select_one(".summary-card .batch-status").get_text(strip=True) == "queued"
    assert soup.select_one(".summary-card .queue-position").get_text() == "#1"
    assert [td.get_text(strip=True) for td in soup.select("#item-table tbody tr td:nth-of-type(2)")] == [
        "p-0(1)",
        "p-1(2)",
        "p-2(3)",
    ]
    assert soup.select_one("#item-table thead").get_text(" ", strip=True) == "# Profile Status Attempts Error Duration"
    assert "created nightly" in soup.select_one("#log-lines").get_text()
    assert soup.select_one("#detail-region")["data-live-batch"] == str(batch_id)
    assert soup.select_one("[data-action=cancel]") is not None


def test_detail_page_of_unknown_batch_is_404(client: FlaskClient, make: Factory) -> None:
    assert client.get("/batches/12345").status_code == 404


def test_detail_fragment_for_htmx_has_no_layout(client: FlaskClient, make: Factory) -> None:
    batch_id = make.batch("stopping", 0)
    html = client.get(f"/batches/{batch_id}", headers={"HX-Request": "true"}).get_data(as_text=True)
    assert "<html" not in html and "Stopping" in html


def test_log_fragment_returns_only_lines_after(app: Flask, client: FlaskClient, make: Factory) -> None:
    batch_id = make.batch("in_progress", 0)
    with app.app_context():
        first = db.session.query(BatchLog).filter_by(batch_id=batch_id).one().id
        db.session.add(BatchLog(batch_id=batch_id, message="item p-0 succeeded"))
        db.session.commit()
        db.session.remove()
    soup = BeautifulSoup(client.get(f"/batches/{batch_id}/log?after={first}").get_data(as_text=True), "html.parser")
    assert [li.select_one(".message").get_text() for li in soup.select("li")] == ["item p-0 succeeded"]
    assert int(soup.select_one("li")["data-log-id"]) > first


def test_items_are_paginated(client: FlaskClient, make: Factory) -> None:
    batch_id = make.batch("queued", 1, profile_ids=make.profiles(150))
    first = BeautifulSoup(client.get(f"/batches/{batch_id}").get_data(as_text=True), "html.parser")
    assert len(first.select("#item-table tbody tr")) == 100
    second = BeautifulSoup(client.get(f"/batches/{batch_id}?items_page=2").get_data(as_text=True), "html.parser")
    assert len(second.select("#item-table tbody tr")) == 50
