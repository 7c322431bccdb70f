"""The table's controls: stop, cancel, move up and down, Start; all through the queue manager."""

from __future__ import annotations

import pytest
from bs4 import BeautifulSoup
from flask import Flask
from flask.testing import FlaskClient

from app.extensions import db
from app.models import Batch, BatchLog
from tests.views.conftest import Factory

HTMX = {"HX-Request": "true"}


def state(app: Flask, batch_id: int) -> tuple[str, int | None]:
    with app.app_context():
        batch = db.session.get(Batch, batch_id)
        assert batch is not None
        result = (batch.status, batch.queue_position)
        db.session.remove()
    return result


def test_cancel_removes_a_queued_batch_and_closes_the_gap(app: Flask, client: FlaskClient, make: Factory) -> None:
    make.pause()
    first, second = make.batch("queued", 1), make.batch("queued", 2)
    response = client.post(f"/batches/{first}/cancel", data={"next": "/batches?page=1"})
    assert response.status_code == 302 and response.headers["Location"] == "/batches?page=1"
    assert state(app, first) == ("cancelled", None)
    assert state(app, second) == ("queued", 1)
    assert "removed from the queue" in client.get("/batches").get_data(as_text=True)


def test_move_up_and_down_swap_neighbours(app: Flask, client: FlaskClient, make: Factory) -> None:
    make.pause()
    a, b, c = make.batch("queued", 1), make.batch("queued", 2), make.batch("queued", 3)
    client.post(f"/batches/{c}/move-up")
    assert [state(app, x)[1] for x in (a, b, c)] == [1, 3, 2]
    client.post(f"/batches/{a}/move-down")
    assert [state(app, x)[1] for x in (a, b, c)] == [2, 3, 1]
    with app.app_context():
        messages = [line.message for line in db.session.query(BatchLog).filter_by(batch_id=a)]
        db.session.remove()
    assert any("by alice" in message for message in messages)


def test_stop_pauses_the_queue_with_the_user_as_actor(app: Flask, client: FlaskClient, make: Factory) -> None:
    running = make.batch("in_progress", 0)
    make.batch("queued", 1)
    client.post(f"/batches/{running}/stop")
    # No run holds this batch (it was written by hand), so it stops at once.
    assert state(app, running) == ("stopped", None)
    html = client.get("/batches").get_data(as_text=True)
    assert "stopped by alice" in html


def test_start_resumes_a_paused_queue(app: Flask, client: FlaskClient, make: Factory) -> None:
    make.pause()
    queued = make.batch("queued", 1, profile_ids=make.profiles(1))
    response = client.post("/queue/start")
    assert response.status_code == 302
    assert state(app, queued)[0] in ("in_progress", "done")
    assert "Queue started" in client.get("/batches").get_data(as_text=True)


def test_refused_control_shows_the_reason(app: Flask, client: FlaskClient, make: Factory) -> None:
    done = make.batch("done")
    client.post(f"/batches/{done}/cancel")
    html = client.get("/batches").get_data(as_text=True)
    assert "only a queued batch can be cancelled" in html
    client.post("/batches/999/stop")
    assert "does not exist" in client.get("/batches").get_data(as_text=True)


def test_htmx_control_returns_the_table_region_with_flash(app: Flask, client: FlaskClient, make: Factory) -> None:
    make.pause()
    first = make.batch("queued", 1)
    make.batch("queued", 2)
    response = client.post(f"/batches/{first}/move-down", data={"next": "/batches?status=queued"}, headers=HTMX)
    assert response.status_code == 200
    soup = BeautifulSoup(response.get_data(as_text=True), "html.parser")
    assert soup.select_one("#batch-table") is not None and soup.select_one("html") is None
    assert soup.select_one("#flashes[hx-swap-oob]").get_text(strip=True) == f"Batch {first} is now #2."
    assert soup.select_one(f'tr[data-batch-id="{first}"] td.queue-position').get_text() == "#2"


def test_htmx_control_from_a_batch_page_returns_its_region(app: Flask, client: FlaskClient, make: Factory) -> None:
    make.pause()
    first = make.batch("queued", 1)
    response = client.post(f"/batches/{first}/cancel", data={"next": f"/batches/{first}"}, headers=HTMX)
    soup = BeautifulSoup(response.get_data(as_text=True), "html.parser")
    assert soup.select_one(".summary-card .batch-status").get_text(strip=True) == "cancelled"


def test_controls_refuse_a_missing_csrf_token(app: Flask, client: FlaskClient, make: Factory, csrf: None) -> None:
    make.pause()
    queued = make.batch("queued", 1)
    client.post(f"/batches/{queued}/cancel")
    assert state(app, queued) == ("queued", 1)
    assert "form expired" in client.get("/batches").get_data(as_text=True)


def test_controls_accept_the_page_csrf_token(app: Flask, client: FlaskClient, make: Factory, csrf: None) -> None:
    make.pause()
    queued = make.batch("queued", 1)
    soup = BeautifulSoup(client.get("/batches").get_data(as_text=True), "html.parser")
    form = soup.select_one(f'tr[data-batch-id="{queued}"] [data-action=cancel]').find_parent("form")
    data = {field["name"]: field.get("value", "") for field in form.select("input[type=hidden]")}
    client.post(form["action"], data=data)
    assert state(app, queued) == ("cancelled", None)


def _log(app: Flask, batch_id: int) -> list[str]:
    with app.app_context():
        messages = [line.message for line in db.session.query(BatchLog).filter_by(batch_id=batch_id)]
        db.session.remove()
    return messages


def test_move_top_puts_a_queued_batch_first(app: Flask, client: FlaskClient, make: Factory) -> None:
    make.pause()
    a, b, c = make.batch("queued", 1), make.batch("queued", 2), make.batch("queued", 3)
    response = client.post(f"/batches/{c}/move-top", data={"next": "/batches"}, headers=HTMX)
    soup = BeautifulSoup(response.get_data(as_text=True), "html.parser")
    assert soup.select_one("#flashes[hx-swap-oob]").get_text(strip=True) == f"Batch {c} is now #1."
    assert [state(app, x)[1] for x in (a, b, c)] == [2, 3, 1]
    assert "moved from #3 to #1 by alice" in _log(app, c)


def test_move_to_a_position_from_the_form(app: Flask, client: FlaskClient, make: Factory) -> None:
    make.pause()
    a, b, c, d = (make.batch("queued", n) for n in range(1, 5))
    client.post(f"/batches/{a}/move", data={"position": " 3 "})
    assert [state(app, x)[1] for x in (a, b, c, d)] == [3, 1, 2, 4]
    client.post(f"/batches/{b}/move", data={"position": "99"})  # past the end means last
    assert [state(app, x)[1] for x in (a, b, c, d)] == [2, 4, 1, 3]
    assert "moved from #1 to #4 by alice" in _log(app, b)


@pytest.mark.parametrize("position", ["0", "-2", "abc", "", "2.5", "99999999999"])
def test_move_to_a_bad_position_names_the_field_and_changes_nothing(
    app: Flask, client: FlaskClient, make: Factory, position: str
) -> None:
    make.pause()
    a, b = make.batch("queued", 1), make.batch("queued", 2)
    response = client.post(f"/batches/{b}/move", data={"position": position, "next": "/batches"}, headers=HTMX)
    soup = BeautifulSoup(response.get_data(as_text=True), "html.parser")
    flash = soup.select_one("#flashes[hx-swap-oob]").get_text(strip=True)
    assert flash.startswith("Position:"), flash
    assert [state(app, x)[1] for x in (a, b)] == [1, 2]
    assert not any(message.startswith("moved") for message in _log(app, b))


def test_move_top_and_to_position_refuse_a_batch_not_queued(app: Flask, client: FlaskClient, make: Factory) -> None:
    done = make.batch("done")
    client.post(f"/batches/{done}/move-top")
    client.post(f"/batches/{done}/move", data={"position": "1"})
    assert state(app, done) == ("done", None)
    assert "only a queued batch can be moved" in client.get("/batches").get_data(as_text=True)


def test_control_on_a_filtered_table_returns_it_filtered(app: Flask, client: FlaskClient, make: Factory) -> None:
    make.pause()
    alpha = make.batch("queued", 1, name="alpha")
    beta = make.batch("queued", 2, name="beta")
    next_url = "/batches?q=bet&status=queued&status=failed"
    response = client.post(f"/batches/{beta}/move-top", data={"next": next_url}, headers=HTMX)
    soup = BeautifulSoup(response.get_data(as_text=True), "html.parser")
    shown = [int(tr["data-batch-id"]) for tr in soup.select("#batch-table tr[data-batch-id]")]
    assert shown == [beta] and state(app, alpha)[1] == 2
    form = soup.select_one(f'tr[data-batch-id="{beta}"] form[data-move-form]')
    assert form.select_one("input[name=next]")["value"] == next_url
