"""POST /batches with profile_tags: resolved to profiles at creation, alone or beside profile_ids."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask

from app.extensions import db
from tests.api.conftest import assert_batch, assert_error
from tests.conftest import ApiClient


def _tagged(api: ApiClient, name: str, *tags: str) -> int:
    response = api.post("/profiles", {"name": name, "tags": list(tags)})
    assert response.status_code == 201, response.get_json()
    return response.get_json()["id"]


def _create(api: ApiClient, **body: Any) -> Any:
    return api.post("/batches", {"name": "b", "processor": "noop"} | body)


def test_batch_by_tag_gets_every_profile_carrying_it_by_name(api: ApiClient) -> None:
    paris = _tagged(api, "paris", "eu-west")
    _tagged(api, "ohio", "us-east")
    berlin = _tagged(api, "berlin", "eu-west", "gpu")
    response = _create(api, profile_tags=["eu-west"])
    assert response.status_code == 201, response.get_json()
    batch = response.get_json()
    assert_batch(batch)
    assert batch["profile_ids"] == [berlin, paris]
    assert batch["progress"]["total"] == 2


def test_batch_tags_add_to_profile_ids_without_repeating_one(api: ApiClient) -> None:
    paris = _tagged(api, "paris", "eu-west")
    ohio = _tagged(api, "ohio", "us-east")
    berlin = _tagged(api, "berlin", "eu-west", "gpu")
    batch = _create(api, profile_ids=[ohio, paris], profile_tags=["eu-west", "gpu"]).get_json()
    assert batch["profile_ids"] == [ohio, paris, berlin]
    assert [item["profile_id"] for item in api.items_of(batch["id"])] == [ohio, paris, berlin]


def test_batch_tags_are_resolved_at_creation_only(api: ApiClient) -> None:
    first = _tagged(api, "a", "eu-west")
    batch = _create(api, profile_tags=["eu-west"]).get_json()
    _tagged(api, "b", "eu-west")
    assert api.batch_of(batch["id"])["profile_ids"] == [first]


@pytest.mark.parametrize(
    "body, field",
    [
        ({"profile_tags": ["eu-west", "nowhere"]}, "profile_tags"),
        ({"profile_tags": ["bad tag"]}, "profile_tags"),
        ({"profile_tags": "eu-west"}, "profile_tags"),
        ({"profile_tags": []}, "profile_ids"),
        ({}, "profile_ids"),
    ],
)
def test_batch_bad_tags_are_422_naming_the_field_and_store_nothing(
    api: ApiClient, counts: Any, body: dict[str, Any], field: str
) -> None:
    _tagged(api, "a", "eu-west")
    before = counts()
    error = assert_error(_create(api, **body), 422, field)
    if "nowhere" in body.get("profile_tags", []):
        assert "nowhere" in str(error["fields"]["profile_tags"])
    assert counts() == before


def test_batch_union_over_10000_profiles_is_422(api: ApiClient, app: Flask, counts: Any) -> None:
    with app.app_context():
        db.session.execute(
            db.text(
                "INSERT INTO profiles (name, attributes, tags, created_at)"
                " SELECT 'p' || g, '{}', ARRAY['many'], now() FROM generate_series(1, 10000) g"
            )
        )
        db.session.commit()
        db.session.remove()
    extra = _tagged(api, "extra", "other")
    before = counts()
    error = assert_error(_create(api, profile_ids=[extra], profile_tags=["many"]), 422, "profile_tags")
    assert "10001" in str(error["fields"])
    assert counts() == before
    assert _create(api, profile_tags=["many"]).get_json()["progress"]["total"] == 10_000
