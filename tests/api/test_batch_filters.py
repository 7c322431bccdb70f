"""GET /batches filters: name, statuses, processor, creator and a creation window; bad values name the field."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from flask import Flask

from tests.api.conftest import assert_error
from tests.conftest import ApiClient
from tests.views.conftest import Factory

DAY = datetime(2025, 3, 10, 12, 0, tzinfo=UTC)


def ids(api: ApiClient, query: str) -> list[int]:
    response = api.get(f"/batches?{query}")
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["total"] == len(body["items"])
    return [batch["id"] for batch in body["items"]]


@pytest.fixture
def make(app: Flask, api: ApiClient) -> Factory:  # api: a clean database and a token
    return Factory(app)


def test_list_filters_by_name_contains_any_case_with_wildcards_taken_literally(api: ApiClient, make: Factory) -> None:
    nightly = make.batch("done", name="nightly-1")
    upper = make.batch("done", name="Big NIGHTLY run")
    make.batch("done", name="weekly")
    percent = make.batch("done", name="50%_off")
    assert ids(api, "q=nightly") == [upper, nightly]
    assert ids(api, "q=%25") == [percent]  # % is a character, not a wildcard
    assert ids(api, "q=_") == [percent]
    assert ids(api, "q=absent") == []


def test_list_filters_by_several_statuses_repeated_or_comma_separated(api: ApiClient, make: Factory) -> None:
    running = make.batch("in_progress", 0)
    queued = make.batch("queued", 1)
    failed = make.batch("failed")
    make.batch("done")
    assert ids(api, "status=queued&status=failed&status=in_progress") == [running, queued, failed]
    assert ids(api, "status=failed,queued") == [queued, failed]
    assert ids(api, "status=failed") == [failed]


def test_list_filters_by_processor_and_creator(api: ApiClient, make: Factory) -> None:
    by_bob = make.batch("done", processor="sleep", created_by="bob")
    make.batch("done", processor="noop", created_by="bob")
    by_carol = make.batch("done", processor="sleep", created_by="carol")
    assert ids(api, "processor=sleep") == [by_carol, by_bob]
    assert ids(api, "created_by=bob&processor=sleep") == [by_bob]
    assert ids(api, "created_by=bo") == []  # who created it is matched exactly


def test_list_created_by_is_the_submitting_token(api: ApiClient) -> None:
    profile_ids = api.profiles(1)
    batch = api.batch(profile_ids, name="mine")
    assert ids(api, "created_by=token:tests") == [batch["id"]]  # pages record the user name


def test_list_filters_by_a_creation_window(api: ApiClient, make: Factory) -> None:
    before = make.batch("done", created_at=DAY - timedelta(days=1))
    on_the_day = make.batch("done", created_at=DAY)
    after = make.batch("done", created_at=DAY + timedelta(days=1))
    assert ids(api, "created_after=2025-03-10") == [after, on_the_day]  # a date is 00:00 UTC, included
    assert ids(api, "created_before=2025-03-10T12:00:00Z") == [before]  # excluded
    assert ids(api, "created_after=2025-03-10&created_before=2025-03-11") == [on_the_day]
    assert ids(api, "created_after=2025-03-10T13:00:00%2B01:00&created_before=2025-03-10T12:00:01Z") == [on_the_day]


def test_list_filters_keep_the_true_queue_positions(api: ApiClient, make: Factory) -> None:
    """Filtered, queued rows skip places: each still shows where it is in the whole queue."""
    running = make.batch("in_progress", 0, name="alpha run")
    make.batch("queued", 1, name="beta")
    second = make.batch("queued", 2, name="alpha 2")
    make.batch("queued", 3, name="beta")
    fourth = make.batch("queued", 4, name="alpha 4")
    items = api.get("/batches?q=alpha").get_json()["items"]
    assert [(b["id"], b["queue_position"]) for b in items] == [(running, 0), (second, 2), (fourth, 4)]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("created_after=yesterday", "created_after"),
        ("created_after=2025-13-01", "created_after"),
        ("created_before=", "created_before"),
        ("created_after=2025-03-10&created_before=2025-03-10", "created_before"),
        ("created_after=2025-03-11&created_before=2025-03-10", "created_before"),
        ("status=queued,bogus", "status"),
        ("q=" + "x" * 201, "q"),
    ],
)
def test_list_refuses_a_bad_filter_naming_it(api: ApiClient, make: Factory, query: str, field: str) -> None:
    make.batch("done")
    error = assert_error(api.get(f"/batches?{query}"), 422, field)
    assert field in error["fields"], error


def test_openapi_describes_the_list_filters(api: ApiClient) -> None:
    spec = api.get("/openapi.json").get_json()
    # The shared ones (the request-id header) are references to components; the filters are the list's own.
    parameters = {p["name"]: p for p in spec["paths"]["/batches"]["get"]["parameters"] if "$ref" not in p}
    assert {"q", "status", "processor", "created_by", "created_after", "created_before"} <= set(parameters)
    assert parameters["status"]["schema"]["type"] == "array"
    assert "in_progress" in parameters["status"]["schema"]["items"]["enum"]
    assert "ISO 8601" in parameters["created_after"]["description"]
