"""The creation page: fields generated from the processors' schemas, errors beside fields."""

from __future__ import annotations

import pytest
from bs4 import BeautifulSoup
from flask import Flask
from flask.testing import FlaskClient

from app.extensions import db
from app.models import Batch
from tests.views.conftest import Factory


def soup_of(response) -> BeautifulSoup:  # type: ignore[no-untyped-def]
    return BeautifulSoup(response.get_data(as_text=True), "html.parser")


def only_batch(app: Flask) -> Batch:
    with app.app_context():
        batches = db.session.query(Batch).all()
        db.session.expunge_all()
        db.session.remove()
    assert len(batches) == 1
    return batches[0]


def test_new_page_lists_profiles_processors_and_generated_fields(client: FlaskClient, make: Factory) -> None:
    make.profiles(3)
    soup = soup_of(client.get("/batches/new"))
    assert len(soup.select("#profile-list input[type=checkbox][name=profile_ids]")) == 3
    assert soup.select_one("#profile-filter") is not None and soup.select_one("#profile-select-all") is not None
    assert [o["value"] for o in soup.select("select#processor option")] == ["http", "noop", "sleep"]
    sleep = soup.select_one('fieldset.params[data-processor="sleep"]')
    assert sleep.select_one("input#field-sleep-seconds")["name"] == "param-sleep-seconds"
    assert sleep.select_one('label[for="field-sleep-seconds"]') is not None
    assert "0 to 3600" in sleep.get_text()
    assert sleep.select_one("textarea#field-sleep-fail_profiles") is not None
    http = soup.select_one('fieldset.params[data-processor="http"]')
    assert http.select_one("input#field-http-url")["type"] == "url"
    assert http.select_one("input#field-http-timeout")["value"] == "10.0"
    # Only the chosen processor's fieldset is shown and submitted.
    assert sleep.has_attr("hidden") and sleep.has_attr("disabled")
    assert not soup.select_one('fieldset.params[data-processor="noop"]').has_attr("hidden")


def test_create_starts_the_batch_and_says_so(app: Flask, client: FlaskClient, make: Factory) -> None:
    ids = make.profiles(2)
    response = client.post("/batches", data={"name": "first", "profile_ids": ids, "processor": "noop"})
    assert response.status_code == 302 and response.headers["Location"] == "/batches"
    batch = only_batch(app)
    assert batch.name == "first" and batch.profile_ids == ids and batch.created_by == "alice"
    flash = soup_of(client.get("/batches")).select_one(".flash-success").get_text()
    assert flash == f"Batch {batch.id} “first” started."


def test_create_while_paused_says_queued_at_k(app: Flask, client: FlaskClient, make: Factory) -> None:
    ids = make.profiles(1)
    make.pause()
    make.batch("queued", 1)
    client.post(
        "/batches",
        data={
            "name": "later",
            "profile_ids": ids,
            "processor": "sleep",
            "param-sleep-seconds": "1.5",
            "param-sleep-fail_profiles": "p-0\nother",
        },
    )
    html = client.get("/batches").get_data(as_text=True)
    assert "queued at #2." in html
    with app.app_context():
        batch = db.session.query(Batch).filter_by(name="later").one()
        assert batch.parameters == {"seconds": 1.5, "fail_profiles": ["p-0", "other"]}
        db.session.remove()


@pytest.mark.parametrize(
    ("form", "errors"),
    [
        ({"name": "", "processor": "noop"}, {"name", "profile_ids"}),
        ({"name": "x" * 201, "processor": "noop", "profile_ids": ["P"]}, {"name"}),
        ({"name": "s", "processor": "sleep", "profile_ids": ["P"]}, {"field-sleep-seconds"}),
        (
            {"name": "s", "processor": "sleep", "profile_ids": ["P"], "param-sleep-seconds": "abc"},
            {"field-sleep-seconds"},
        ),
        (
            {"name": "s", "processor": "sleep", "profile_ids": ["P"], "param-sleep-seconds": "9999"},
            {"field-sleep-seconds"},
        ),
        (
            {"name": "h", "processor": "http", "profile_ids": ["P"], "param-http-url": "http://evil.example/"},
            {"field-http-url"},
        ),
        ({"name": "u", "processor": "nope", "profile_ids": ["P"]}, {"processor"}),
        ({"name": "m", "processor": "noop", "profile_ids": ["999999"]}, {"profile_ids"}),
        ({"name": "t", "processor": "noop", "profile_ids": ["P"], "item_timeout": "0"}, {"item_timeout"}),
        ({"name": "t", "processor": "noop", "profile_ids": ["P"], "item_timeout": "86401"}, {"item_timeout"}),
        ({"name": "t", "processor": "noop", "profile_ids": ["P"], "item_timeout": "an hour"}, {"item_timeout"}),
        ({"name": "t", "processor": "noop", "profile_ids": ["P"], "item_timeout": "nan"}, {"item_timeout"}),
        ({"name": "", "processor": "noop", "profile_ids": ["P"], "item_timeout": "-1"}, {"name", "item_timeout"}),
    ],
)
def test_create_shows_errors_beside_fields_and_keeps_values(
    app: Flask, client: FlaskClient, make: Factory, form: dict, errors: set[str]
) -> None:
    profile_id = make.profiles(1)[0]
    data = {
        key: ([str(profile_id) if v == "P" else v for v in value] if isinstance(value, list) else value)
        for key, value in form.items()
    }
    response = client.post("/batches", data=data)
    assert response.status_code == 422
    soup = soup_of(response)
    shown = {p["id"].removesuffix("-error") for p in soup.select(".field-error")}
    assert shown == errors
    for key in errors:
        if key.startswith("field-") or key in ("name", "item_timeout"):
            assert soup.select_one(f"#{key}")["aria-invalid"] == "true"
    assert soup.select_one("#name")["value"] == data["name"]
    assert soup.select_one("#item_timeout")["value"] == data.get("item_timeout", "")
    if "param-sleep-seconds" in data:
        assert soup.select_one("#field-sleep-seconds")["value"] == data["param-sleep-seconds"]
    if data.get("profile_ids") == [str(profile_id)]:
        assert soup.select_one(f'input[name=profile_ids][value="{profile_id}"]').has_attr("checked")
    with app.app_context():
        assert db.session.query(Batch).count() == 0
        db.session.remove()


def test_new_page_offers_an_optional_item_time_limit_naming_the_default(
    app: Flask, client: FlaskClient, make: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(app.config, "ITEM_TIMEOUT_DEFAULT", 900.0)
    soup = soup_of(client.get("/batches/new"))
    field = soup.select_one("input#item_timeout")
    assert field["name"] == "item_timeout" and field["value"] == "" and not field.has_attr("required")
    assert soup.select_one('label[for="item_timeout"]').get_text() == "Item time limit (seconds)"
    hint = soup.select_one("#item_timeout-hint").get_text()
    assert "1 to 86400" in hint and "900 s" in hint


@pytest.mark.parametrize(("typed", "stored"), [("90", 90.0), (" 1.5 ", 1.5), ("", 3600.0)])
def test_create_stores_the_item_time_limit_typed_or_the_default(
    app: Flask, client: FlaskClient, make: Factory, typed: str, stored: float
) -> None:
    ids = make.profiles(1)
    data = {"name": "limited", "profile_ids": ids, "processor": "noop", "item_timeout": typed}
    assert client.post("/batches", data=data).status_code == 302
    assert only_batch(app).item_timeout == stored


def test_create_refuses_a_missing_csrf_token(app: Flask, client: FlaskClient, make: Factory, csrf: None) -> None:
    ids = make.profiles(1)
    response = client.post("/batches", data={"name": "x", "profile_ids": ids, "processor": "noop"})
    assert response.status_code == 400
    assert "form expired" in response.get_data(as_text=True)


def test_new_page_handles_thousands_of_profiles(client: FlaskClient, make: Factory) -> None:
    make.profiles(3000)
    response = client.get("/batches/new")
    assert response.status_code == 200
    assert len(soup_of(response).select("#profile-list li")) == 3000


def test_create_form_offers_tags_with_counts_and_creates_by_tag(app: Flask, client: FlaskClient, make: Factory) -> None:
    ids = make.profiles(3)
    make.tag(ids[:2], "eu-west")
    soup = soup_of(client.get("/batches/new"))
    boxes = soup.select("#profile-tags input[name=profile_tags]")
    assert [box["value"] for box in boxes] == ["eu-west"]
    assert "(2)" in boxes[0].parent.get_text()
    data = {"name": "by tag", "processor": "noop", "profile_tags": "eu-west", "profile_ids": [str(ids[2])]}
    assert client.post("/batches", data=data).status_code == 302
    with app.app_context():
        assert db.session.query(Batch).filter_by(name="by tag").one().profile_ids == [ids[2], ids[0], ids[1]]
        db.session.remove()


def test_create_form_unknown_tag_is_shown_beside_the_tags(client: FlaskClient, make: Factory) -> None:
    make.profiles(1)
    response = client.post("/batches", data={"name": "t", "processor": "noop", "profile_tags": "gone"})
    assert response.status_code == 422
    assert "gone" in soup_of(response).select_one("#profile_tags-error").get_text()
