"""Profiles over the API: tags, filters, PATCH and DELETE (refused while a queued or running batch uses one)."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask

from app.extensions import db
from tests.api.conftest import PROFILE_KEYS, assert_error, assert_shape
from tests.conftest import ApiClient


def _profile(api: ApiClient, name: str, **body: Any) -> dict[str, Any]:
    response = api.post("/profiles", {"name": name, **body})
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def _patch(api: ApiClient, profile_id: int, body: Any) -> Any:
    return api.client.patch(f"/api/v1/profiles/{profile_id}", json=body, headers=api.headers)


def _delete(api: ApiClient, profile_id: int) -> Any:
    return api.client.delete(f"/api/v1/profiles/{profile_id}", headers=api.headers)


def set_status(app: Flask, batch_id: int, status: str) -> None:
    """Put a batch in a terminal status by hand (no worker runs in the API tests)."""
    with app.app_context():
        db.session.execute(
            db.text("UPDATE batches SET status = :status, queue_rank = NULL, finished_at = now() WHERE id = :id"),
            {"status": status, "id": batch_id},
        )
        db.session.commit()
        db.session.remove()


def test_create_profile_with_tags_keeps_them_distinct_and_sorted(api: ApiClient) -> None:
    body = _profile(api, "a", tags=["eu-west", "gpu", "eu-west"])
    assert_shape(body, PROFILE_KEYS)
    assert body["tags"] == ["eu-west", "gpu"]
    assert api.get(f"/profiles/{body['id']}").get_json()["tags"] == ["eu-west", "gpu"]


@pytest.mark.parametrize("tags", [["has space"], [""], ["a,b"], ["x" * 65], "eu", [1]])
def test_create_profile_bad_tag_is_422_naming_tags(api: ApiClient, counts: Any, tags: Any) -> None:
    before = counts()
    assert_error(api.post("/profiles", {"name": "a", "tags": tags}), 422, "tags")
    assert counts() == before


def test_list_profiles_filters_by_tag_and_name(api: ApiClient) -> None:
    _profile(api, "berlin-1", tags=["eu-west"])
    _profile(api, "paris-1", tags=["eu-west", "gpu"])
    _profile(api, "ohio-1", tags=["us-east"])
    names = lambda query: [p["name"] for p in api.get(f"/profiles{query}").get_json()["items"]]  # noqa: E731
    assert names("?tag=eu-west") == ["berlin-1", "paris-1"]
    assert names("?tag=gpu") == ["paris-1"]
    assert names("?q=-1&tag=us-east") == ["ohio-1"]
    assert names("?q=PAR") == ["paris-1"]
    assert names("?tag=none") == []
    assert api.get("/profiles?tag=eu-west").get_json()["total"] == 2


def test_list_profiles_name_filter_matches_percent_and_underscore_literally(api: ApiClient) -> None:
    _profile(api, "a_b")
    _profile(api, "axb")
    _profile(api, "100%")
    assert [p["name"] for p in api.get("/profiles?q=_").get_json()["items"]] == ["a_b"]
    assert [p["name"] for p in api.get("/profiles?q=%25").get_json()["items"]] == ["100%"]


def test_patch_profile_changes_only_the_given_fields(api: ApiClient) -> None:
    profile = _profile(api, "a", attributes={"x": 1}, tags=["t1"])
    response = _patch(api, profile["id"], {"tags": ["t2", "t3"]})
    assert response.status_code == 200
    body = response.get_json()
    assert (body["name"], body["attributes"], body["tags"]) == ("a", {"x": 1}, ["t2", "t3"])
    body = _patch(api, profile["id"], {"name": "b", "attributes": {"y": 2}}).get_json()
    assert (body["name"], body["attributes"], body["tags"]) == ("b", {"y": 2}, ["t2", "t3"])
    assert api.get(f"/profiles/{profile['id']}").get_json() == body
    assert body["created_at"] == profile["created_at"]


def test_patch_profile_to_a_taken_name_is_409_and_changes_nothing(api: ApiClient) -> None:
    first, second = _profile(api, "a"), _profile(api, "b", attributes={"k": "v"})
    error = assert_error(_patch(api, second["id"], {"name": "a", "attributes": {}}), 409, "name")
    assert "already exists" in error["message"]
    assert api.get(f"/profiles/{second['id']}").get_json() == second
    assert api.get(f"/profiles/{first['id']}").get_json() == first


@pytest.mark.parametrize(
    "body, field",
    [({"name": ""}, "name"), ({"name": "x" * 201}, "name"), ({"attributes": []}, "attributes"), ({"id": 5}, "id")],
)
def test_patch_profile_invalid_body_is_422_naming_the_field(api: ApiClient, body: Any, field: str) -> None:
    profile = _profile(api, "a")
    assert_error(_patch(api, profile["id"], body), 422, field)
    assert api.get(f"/profiles/{profile['id']}").get_json() == profile


def test_patch_unknown_profile_is_404(api: ApiClient) -> None:
    assert_error(_patch(api, 999, {"name": "x"}), 404)


def test_delete_unused_profile_is_204_and_gone(api: ApiClient, counts: Any) -> None:
    profile = _profile(api, "a")
    before = counts()
    response = _delete(api, profile["id"])
    assert response.status_code == 204 and response.get_data() == b""
    assert counts()["profiles"] == before["profiles"] - 1
    assert_error(api.get(f"/profiles/{profile['id']}"), 404)
    assert_error(_delete(api, profile["id"]), 404)


@pytest.mark.parametrize("running", [True, False], ids=["running", "queued"])
def test_delete_profile_used_by_a_queued_or_running_batch_is_409_naming_it(
    api: ApiClient, counts: Any, running: bool
) -> None:
    ids = api.profiles(2)
    first = api.batch(ids[:1], name="first")
    batch = first if running else api.batch(ids, name="second")
    before = counts()
    error = assert_error(_delete(api, ids[0]), 409, "batches")
    assert f"batch {first['id']}" in error["message"] and "queued or running" in error["message"]
    assert batch["id"] in error["fields"]["batches"]
    assert counts() == before
    assert api.get(f"/profiles/{ids[0]}").status_code == 200


def test_delete_profile_used_only_by_finished_batches_hides_it_and_keeps_their_items(
    api: ApiClient, app: Flask
) -> None:
    ids = api.profiles(2)
    batch = api.batch(ids)
    set_status(app, batch["id"], "done")
    assert _delete(api, ids[0]).status_code == 204
    assert_error(api.get(f"/profiles/{ids[0]}"), 404)
    assert [p["id"] for p in api.get("/profiles").get_json()["items"]] == [ids[1]]
    assert [item["profile_id"] for item in api.items_of(batch["id"])] == ids
    # The name is free again, and the deleted profile can't be chosen for a new batch.
    assert api.post("/profiles", {"name": "p-0"}).status_code == 201
    assert_error(api.post("/batches", {"name": "b", "profile_ids": [ids[0]], "processor": "noop"}), 422, "profile_ids")
    assert_error(_patch(api, ids[0], {"name": "z"}), 404)


def test_delete_profile_once_its_batch_was_cancelled_is_allowed(api: ApiClient, app: Flask) -> None:
    ids = api.profiles(1)
    api.batch(ids, name="running")
    queued = api.batch(ids, name="queued")
    running = api.get("/queue").get_json()["running"]["id"]
    assert api.post(f"/batches/{queued['id']}/cancel").status_code == 200
    error = assert_error(_delete(api, ids[0]), 409)
    assert str(running) in error["message"] and str(queued["id"]) not in error["message"]
    set_status(app, running, "failed")
    assert _delete(api, ids[0]).status_code == 204
