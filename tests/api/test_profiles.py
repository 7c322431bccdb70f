"""Profiles over the API: create, read, list, the taken-name conflict and unknown ids."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask

from app.extensions import db
from tests.api.conftest import (
    LIST_KEYS,
    PROFILE_KEYS,
    assert_error,
    assert_iso,
    assert_shape,
)
from tests.conftest import ApiClient


def _insert_profiles(app: Flask, count: int) -> None:
    with app.app_context():
        db.session.execute(
            db.text(
                "INSERT INTO profiles (name, attributes, created_at) SELECT 'q' || lpad(g::text, 4, '0'), '{}',"
                " now() FROM generate_series(1, :n) g"
            ),
            {"n": count},
        )
        db.session.commit()
        db.session.remove()


def test_create_profile_returns_201_the_profile_and_its_location(
    api: ApiClient,
) -> None:
    response = api.post(
        "/profiles",
        {
            "name": "alice",
            "attributes": {"email": "a@example.com", "n": [1, {"x": None}]},
        },
    )
    assert response.status_code == 201
    body = response.get_json()
    assert_shape(body, PROFILE_KEYS)
    assert body["name"] == "alice"
    assert body["attributes"] == {"email": "a@example.com", "n": [1, {"x": None}]}
    assert_iso(body["created_at"])
    location = response.headers["Location"]
    assert location.endswith(f"/api/v1/profiles/{body['id']}")
    assert api.client.get(location, headers=api.headers).get_json() == body


def test_create_profile_without_attributes_stores_an_empty_object(
    api: ApiClient,
) -> None:
    response = api.post("/profiles", {"name": "bob"})
    assert response.status_code == 201
    assert response.get_json()["attributes"] == {}


@pytest.mark.parametrize("name", ["a", "x" * 200, "名前 with spaces"])
def test_create_profile_name_of_1_to_200_characters_is_accepted(api: ApiClient, name: str) -> None:
    response = api.post("/profiles", {"name": name})
    assert response.status_code == 201
    assert response.get_json()["name"] == name


def test_create_profile_taken_name_is_409_and_stores_nothing(api: ApiClient, counts: Any) -> None:
    first = api.post("/profiles", {"name": "alice", "attributes": {"v": 1}}).get_json()
    before = counts()
    response = api.post("/profiles", {"name": "alice", "attributes": {"v": 2}})
    assert_error(response, 409)
    assert counts() == before
    assert api.get(f"/profiles/{first['id']}").get_json()["attributes"] == {"v": 1}


def test_get_profile_returns_the_profile(api: ApiClient) -> None:
    ids = api.profiles(2)
    body = api.get(f"/profiles/{ids[1]}").get_json()
    assert_shape(body, PROFILE_KEYS)
    assert (body["id"], body["name"], body["attributes"]) == (ids[1], "p-1", {"n": 1})


@pytest.mark.parametrize("profile_id", [0, 3, 999, 2**31 - 1, 2**31, 2**63, 10**30])
def test_get_profile_unknown_id_is_404(api: ApiClient, profile_id: int) -> None:
    api.profiles(2)
    error = assert_error(api.get(f"/profiles/{profile_id}"), 404)
    assert error["code"]


def test_list_profiles_returns_the_envelope(api: ApiClient) -> None:
    api.profiles(3)
    body = api.get("/profiles").get_json()
    assert_shape(body, LIST_KEYS)
    assert (body["total"], body["page"], body["per_page"]) == (3, 1, 50)
    for item in body["items"]:
        assert_shape(item, PROFILE_KEYS)
    assert sorted(item["name"] for item in body["items"]) == ["p-0", "p-1", "p-2"]


def test_list_profiles_per_page_defaults_to_50(api: ApiClient, app: Flask) -> None:
    _insert_profiles(app, 51)
    body = api.get("/profiles").get_json()
    assert (len(body["items"]), body["total"], body["per_page"]) == (50, 51, 50)


def test_list_profiles_pages_cover_every_profile_once(api: ApiClient, app: Flask) -> None:
    _insert_profiles(app, 7)
    pages = [api.get(f"/profiles?page={page}&per_page=3").get_json() for page in (1, 2, 3, 4)]
    assert [len(p["items"]) for p in pages] == [3, 3, 1, 0]
    assert all((p["total"], p["per_page"]) == (7, 3) for p in pages)
    assert [p["page"] for p in pages] == [1, 2, 3, 4]
    ids = [item["id"] for p in pages for item in p["items"]]
    assert sorted(ids) == list(range(1, 8))


def test_list_profiles_empty(api: ApiClient) -> None:
    assert api.get("/profiles").get_json() == {
        "items": [],
        "total": 0,
        "page": 1,
        "per_page": 50,
    }
