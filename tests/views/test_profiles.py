"""The profiles page: list with filters, create and edit with errors beside the fields, delete, import."""

from __future__ import annotations

import io
from typing import Any

from bs4 import BeautifulSoup
from flask import Flask
from flask.testing import FlaskClient

from tests.views.conftest import Factory


def test_profiles_page_lists_and_filters(client: FlaskClient, make: Factory) -> None:
    make.profiles(3, prefix="alpha")
    make.profiles(2, prefix="beta")
    soup = BeautifulSoup(client.get("/profiles").get_data(as_text=True), "html.parser")
    assert len(soup.select("#profile-table tr[data-profile-id]")) == 5
    soup = BeautifulSoup(client.get("/profiles?q=bet").get_data(as_text=True), "html.parser")
    assert [td.get_text() for td in soup.select("#profile-table td:nth-of-type(2)")] == ["beta-0", "beta-1"]


def test_create_profile(client: FlaskClient, make: Factory) -> None:
    response = client.post("/profiles", data={"name": "acme", "attributes": '{"region": "eu"}'})
    assert response.status_code == 302
    html = client.get("/profiles").get_data(as_text=True)
    assert "Profile “acme” created." in html and "acme" in html and "region" in html


def test_create_profile_errors_beside_fields(client: FlaskClient, make: Factory) -> None:
    make.profiles(1, prefix="taken")
    response = client.post("/profiles", data={"name": "taken-0", "attributes": ""})
    assert response.status_code == 409
    soup = BeautifulSoup(response.get_data(as_text=True), "html.parser")
    assert "already exists" in soup.select_one("#name-error").get_text()
    response = client.post("/profiles", data={"name": "", "attributes": "[1, 2"})
    assert response.status_code == 422
    soup = BeautifulSoup(response.get_data(as_text=True), "html.parser")
    assert soup.select_one("#name-error") is not None
    assert "Not valid JSON" in soup.select_one("#attributes-error").get_text()
    assert soup.select_one("#attributes").get_text() == "[1, 2"


def _soup(response: Any) -> BeautifulSoup:
    return BeautifulSoup(response.get_data(as_text=True), "html.parser")


def test_profiles_page_shows_tags_and_filters_by_tag(app: Flask, client: FlaskClient, make: Factory) -> None:
    ids = make.profiles(3)
    make.tag(ids[:2], "eu-west", "gpu")
    soup = _soup(client.get("/profiles?tag=eu-west"))
    rows = soup.select("#profile-table tr[data-profile-id]")
    assert [row["data-profile-id"] for row in rows] == [str(i) for i in ids[:2]]
    assert [a.get_text() for a in rows[0].select("a.tag")] == ["eu-west", "gpu"]
    assert soup.select_one("#tag-filter option[selected]")["value"] == "eu-west"
    assert "eu-west (2)" in soup.select_one("#tag-filter").get_text()


def test_edit_profile_page_saves_name_attributes_and_tags(client: FlaskClient, make: Factory) -> None:
    profile_id = make.profiles(1)[0]
    soup = _soup(client.get(f"/profiles/{profile_id}/edit"))
    assert soup.select_one("#name")["value"] == "p-0"
    data = {"name": "renamed", "attributes": '{"region": "eu"}', "tags": "eu-west, gpu"}
    response = client.post(f"/profiles/{profile_id}/edit", data=data)
    assert response.status_code == 302
    row = _soup(client.get("/profiles")).select_one(f'tr[data-profile-id="{profile_id}"]')
    assert "renamed" in row.get_text() and "region" in row.get_text()
    assert [a.get_text() for a in row.select("a.tag")] == ["eu-west", "gpu"]


def test_edit_profile_errors_beside_fields_change_nothing(client: FlaskClient, make: Factory) -> None:
    second = make.profiles(2)[1]
    response = client.post(f"/profiles/{second}/edit", data={"name": "p-0", "attributes": "", "tags": ""})
    assert response.status_code == 409
    assert "already exists" in _soup(response).select_one("#name-error").get_text()
    response = client.post(f"/profiles/{second}/edit", data={"name": "x", "attributes": "[]", "tags": "bad tag!"})
    assert response.status_code == 422
    soup = _soup(response)
    assert soup.select_one("#attributes-error") and soup.select_one("#tags-error")
    names = [td.get_text() for td in _soup(client.get("/profiles")).select("#profile-table td:nth-of-type(2)")]
    assert names == ["p-0", "p-1"]


def test_delete_profile_asks_then_deletes(client: FlaskClient, make: Factory) -> None:
    profile_id = make.profiles(1)[0]
    soup = _soup(client.get(f"/profiles/{profile_id}/delete"))
    assert "Delete profile “p-0”?" in soup.select_one("h1").get_text()
    assert soup.select_one("#profile-delete-form input[name=csrf_token]") is not None
    response = client.post(f"/profiles/{profile_id}/delete")
    assert response.status_code == 302
    html = client.get("/profiles").get_data(as_text=True)
    assert "Profile “p-0” deleted." in html and 'data-profile-id="' not in html


def test_delete_profile_used_by_a_queued_batch_is_refused_with_the_reason(client: FlaskClient, make: Factory) -> None:
    profile_id = make.profiles(1)[0]
    batch_id = make.batch("queued", position=1, profile_ids=[profile_id])
    response = client.post(f"/profiles/{profile_id}/delete")
    assert response.status_code == 409
    message = _soup(response).select_one("#delete-error").get_text()
    assert f"queued or running batch {batch_id}" in message
    assert f'data-profile-id="{profile_id}"' in client.get("/profiles").get_data(as_text=True)


def test_delete_profile_without_the_csrf_token_is_refused(client: FlaskClient, make: Factory, csrf: None) -> None:
    profile_id = make.profiles(1)[0]
    assert client.post(f"/profiles/{profile_id}/delete").status_code == 400
    assert f'data-profile-id="{profile_id}"' in client.get("/profiles").get_data(as_text=True)


def test_import_upload_creates_profiles(client: FlaskClient, make: Factory) -> None:
    content = b"name,tags,region\nberlin,eu-west,eu\nparis,eu-west,eu\n"
    response = client.post("/profiles/import", data={"file": (io.BytesIO(content), "people.csv")})
    assert response.status_code == 302
    html = client.get("/profiles?tag=eu-west").get_data(as_text=True)
    assert "Imported people.csv: 2 created, 0 updated." in html
    assert html.count("data-profile-id=") == 2


def test_import_upload_with_bad_lines_lists_them_and_imports_nothing(client: FlaskClient, make: Factory) -> None:
    content = b'{"name": "a"}\n{"name": ""}\nnot json\n'
    response = client.post("/profiles/import", data={"file": (io.BytesIO(content), "people.jsonl")})
    assert response.status_code == 422
    items = _soup(response).select("#import-errors li")
    assert [li["data-line"] for li in items] == ["2", "3"]
    assert items[0].get_text().startswith("Line 2: name:")
    assert "not valid JSON" in items[1].get_text()
    assert "data-profile-id=" not in client.get("/profiles").get_data(as_text=True)


def test_import_upload_of_another_kind_of_file_is_refused(client: FlaskClient, make: Factory) -> None:
    response = client.post("/profiles/import", data={"file": (io.BytesIO(b"name\na\n"), "people.txt")})
    assert response.status_code == 422
    assert "Choose a .csv or .jsonl file." in _soup(response).select_one("#import-errors").get_text()
