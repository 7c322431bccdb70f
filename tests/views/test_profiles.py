"""The profiles page: list with a filter, create with errors beside the fields."""

from __future__ import annotations

from bs4 import BeautifulSoup
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
