"""Every bad input is refused with 400/422 and the contract's error object, and nothing is stored."""

from __future__ import annotations

import json
from typing import Any

import pytest
from flask import Flask

from app.extensions import db
from tests.api.conftest import assert_error, running_and_queued
from tests.conftest import ApiClient

MISSING = object()
ONE_MIB = 1024 * 1024
INT4_MAX = 2**31 - 1


def _with(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    body = dict(base)
    for key, value in changes.items():
        if value is MISSING:
            body.pop(key, None)
        else:
            body[key] = value
    return body


VALID_BATCH = {
    "name": "b",
    "profile_ids": [1, 2],
    "processor": "noop",
    "parameters": {},
}

BAD_BATCHES = [
    # processor
    pytest.param({"processor": "nope"}, "processor", id="unknown_processor"),
    pytest.param({"processor": ""}, "processor", id="empty_processor"),
    pytest.param({"processor": 5}, "processor", id="processor_not_a_string"),
    pytest.param({"processor": None}, "processor", id="processor_null"),
    pytest.param({"processor": MISSING}, "processor", id="processor_missing"),
    # profile ids
    pytest.param({"profile_ids": []}, "profile_ids", id="empty_profile_ids"),
    pytest.param({"profile_ids": [1, 1]}, "profile_ids", id="duplicate_profile_ids"),
    pytest.param({"profile_ids": [1, 999]}, "profile_ids", id="unknown_profile_id"),
    pytest.param(
        {"profile_ids": [1, INT4_MAX]},
        "profile_ids",
        id="unknown_profile_id_at_int4_max",
    ),
    pytest.param({"profile_ids": [1, 2**40]}, "profile_ids", id="profile_id_past_int4"),
    pytest.param({"profile_ids": [1, 2**70]}, "profile_ids", id="profile_id_past_int8"),
    pytest.param({"profile_ids": [0]}, "profile_ids", id="profile_id_zero"),
    pytest.param({"profile_ids": [-1]}, "profile_ids", id="profile_id_negative"),
    pytest.param({"profile_ids": ["1"]}, "profile_ids", id="profile_id_string"),
    pytest.param({"profile_ids": [1.5]}, "profile_ids", id="profile_id_float"),
    pytest.param({"profile_ids": [1.0]}, "profile_ids", id="profile_id_integral_float"),
    pytest.param({"profile_ids": [True]}, "profile_ids", id="profile_id_bool"),
    pytest.param({"profile_ids": [None]}, "profile_ids", id="profile_id_null"),
    pytest.param({"profile_ids": 1}, "profile_ids", id="profile_ids_not_a_list"),
    pytest.param({"profile_ids": None}, "profile_ids", id="profile_ids_null"),
    pytest.param({"profile_ids": MISSING}, "profile_ids", id="profile_ids_missing"),
    pytest.param(
        {"profile_ids": list(range(1, 10_002))},
        "profile_ids",
        id="over_10000_profile_ids",
    ),
    # name
    pytest.param({"name": ""}, "name", id="empty_name"),
    pytest.param({"name": "x" * 201}, "name", id="name_over_200"),
    pytest.param({"name": 5}, "name", id="name_not_a_string"),
    pytest.param({"name": None}, "name", id="name_null"),
    pytest.param({"name": MISSING}, "name", id="name_missing"),
    pytest.param({"name": "a\u0000b"}, "name", id="name_with_nul"),
    # parameters, whatever the processor
    pytest.param({"parameters": []}, "parameters", id="parameters_a_list"),
    pytest.param({"parameters": "x"}, "parameters", id="parameters_a_string"),
    pytest.param({"parameters": None}, "parameters", id="parameters_null"),
    # noop
    pytest.param({"parameters": {"x": 1}}, "parameters", id="noop_unknown_parameter"),
    # sleep
    pytest.param(
        {"processor": "sleep", "parameters": {}},
        "parameters",
        id="sleep_seconds_missing",
    ),
    pytest.param(
        {"processor": "sleep", "parameters": MISSING},
        "parameters",
        id="sleep_parameters_missing",
    ),
    pytest.param(
        {"processor": "sleep", "parameters": {"seconds": -1}},
        "parameters",
        id="sleep_seconds_negative",
    ),
    pytest.param(
        {"processor": "sleep", "parameters": {"seconds": 3600.5}},
        "parameters",
        id="sleep_seconds_over",
    ),
    pytest.param(
        {"processor": "sleep", "parameters": {"seconds": "abc"}},
        "parameters",
        id="sleep_seconds_text",
    ),
    pytest.param(
        {"processor": "sleep", "parameters": {"seconds": True}},
        "parameters",
        id="sleep_seconds_bool",
    ),
    pytest.param(
        {"processor": "sleep", "parameters": {"seconds": None}},
        "parameters",
        id="sleep_seconds_null",
    ),
    pytest.param(
        {"processor": "sleep", "parameters": {"seconds": 1, "fail_profiles": "p-0"}},
        "parameters",
        id="sleep_fail_profiles_not_a_list",
    ),
    pytest.param(
        {"processor": "sleep", "parameters": {"seconds": 1, "fail_profiles": [1]}},
        "parameters",
        id="sleep_fail_profiles_not_names",
    ),
    pytest.param(
        {
            "processor": "sleep",
            "parameters": {"seconds": 1, "fail_profiles": ["p\u0000"]},
        },
        "parameters",
        id="sleep_fail_profiles_with_nul",
    ),
    pytest.param(
        {"processor": "sleep", "parameters": {"seconds": 1, "other": 1}},
        "parameters",
        id="sleep_unknown_parameter",
    ),
    # http
    pytest.param(
        {"processor": "http", "parameters": {"url": "http://example.com/hook"}},
        "parameters",
        id="http_host_not_allowed",
    ),
    pytest.param(
        {"processor": "http", "parameters": {"url": "http://127.0.0.1.example.com/"}},
        "parameters",
        id="http_host_only_prefixed_by_an_allowed_one",
    ),
    pytest.param({"processor": "http", "parameters": {}}, "parameters", id="http_url_missing"),
    pytest.param(
        {"processor": "http", "parameters": {"url": "not a url"}},
        "parameters",
        id="http_url_malformed",
    ),
    pytest.param(
        {"processor": "http", "parameters": {"url": "ftp://127.0.0.1/x"}},
        "parameters",
        id="http_url_not_http",
    ),
    pytest.param(
        {"processor": "http", "parameters": {"url": 5}},
        "parameters",
        id="http_url_not_a_string",
    ),
    pytest.param(
        {"processor": "http", "parameters": {"url": "http://127.0.0.1/", "timeout": 0}},
        "parameters",
        id="http_timeout_zero",
    ),
    pytest.param(
        {
            "processor": "http",
            "parameters": {"url": "http://127.0.0.1/", "timeout": "soon"},
        },
        "parameters",
        id="http_timeout_text",
    ),
    # item_timeout: a JSON number of seconds, 1..86400
    pytest.param({"item_timeout": 0}, "item_timeout", id="item_timeout_zero"),
    pytest.param({"item_timeout": 0.5}, "item_timeout", id="item_timeout_under_a_second"),
    pytest.param({"item_timeout": -60}, "item_timeout", id="item_timeout_negative"),
    pytest.param({"item_timeout": 86400.5}, "item_timeout", id="item_timeout_over_a_day"),
    pytest.param({"item_timeout": 10**30}, "item_timeout", id="item_timeout_huge"),
    pytest.param({"item_timeout": float("inf")}, "item_timeout", id="item_timeout_infinity"),
    pytest.param({"item_timeout": float("nan")}, "item_timeout", id="item_timeout_nan"),
    pytest.param({"item_timeout": "60"}, "item_timeout", id="item_timeout_text"),
    pytest.param({"item_timeout": True}, "item_timeout", id="item_timeout_bool"),
    pytest.param({"item_timeout": None}, "item_timeout", id="item_timeout_null"),
    pytest.param({"item_timeout": [60]}, "item_timeout", id="item_timeout_a_list"),
    # the body itself
    pytest.param({"extra": 1}, "extra", id="unknown_field"),
]


@pytest.mark.parametrize("changes, field", BAD_BATCHES)
def test_create_batch_bad_input_is_refused_naming_the_field_and_stores_nothing(
    api: ApiClient,
    profile_ids: list[int],
    counts: Any,
    changes: dict[str, Any],
    field: str,
) -> None:
    assert profile_ids == [1, 2]
    before = counts()
    response = api.post("/batches", _with(VALID_BATCH, changes))
    error = assert_error(response, (400, 422), field)
    assert error["message"] and error["fields"][field]
    assert counts() == before


@pytest.mark.parametrize(
    "parameters",
    [
        pytest.param({"url": "http://127.0.0.1:9/hook"}, id="127.0.0.1"),
        pytest.param({"url": "http://localhost/hook", "timeout": 2}, id="localhost"),
    ],
)
def test_create_batch_http_processor_accepts_allowed_hosts(
    api: ApiClient, profile_ids: list[int], parameters: dict[str, Any]
) -> None:
    batch = api.batch(profile_ids, "http", **parameters)
    assert batch["parameters"]["url"] == parameters["url"]


@pytest.mark.parametrize(
    "processor, parameters",
    [
        pytest.param("noop", {}, id="noop"),
        pytest.param("sleep", {"seconds": 0}, id="sleep_zero"),
        pytest.param(
            "sleep",
            {"seconds": 3600, "fail_profiles": ["p-0"]},
            id="sleep_max_with_failures",
        ),
    ],
)
def test_create_batch_valid_parameters_at_the_bounds_are_accepted(
    api: ApiClient, profile_ids: list[int], processor: str, parameters: dict[str, Any]
) -> None:
    batch = api.batch(profile_ids, processor, **parameters)
    assert batch["processor"] == processor
    for key, value in parameters.items():
        assert batch["parameters"][key] == value


@pytest.mark.parametrize("item_timeout", [1, 1.5, 86400])
def test_create_batch_item_timeout_at_the_bounds_is_accepted(
    api: ApiClient, profile_ids: list[int], item_timeout: float
) -> None:
    response = api.post("/batches", {**VALID_BATCH, "item_timeout": item_timeout})
    assert response.status_code == 201, response.get_json()
    assert response.get_json()["item_timeout"] == item_timeout


def test_create_batch_10000_profile_ids_are_accepted(api: ApiClient, app: Flask, counts: Any) -> None:
    with app.app_context():
        db.session.execute(
            db.text(
                "INSERT INTO profiles (name, attributes, created_at) SELECT 'p' || g, '{}', now()"
                " FROM generate_series(1, 10000) g"
            )
        )
        db.session.commit()
        db.session.remove()
    batch = api.batch(list(range(1, 10_001)))
    assert batch["progress"]["total"] == 10_000
    assert counts()["batch_items"] == 10_000


BAD_PROFILES = [
    pytest.param({"name": MISSING}, "name", id="name_missing"),
    pytest.param({"name": ""}, "name", id="empty_name"),
    pytest.param({"name": "x" * 201}, "name", id="name_over_200"),
    pytest.param({"name": 5}, "name", id="name_not_a_string"),
    pytest.param({"name": None}, "name", id="name_null"),
    pytest.param({"name": ["a"]}, "name", id="name_a_list"),
    pytest.param({"name": "a\u0000b"}, "name", id="name_with_nul"),
    pytest.param({"attributes": []}, "attributes", id="attributes_a_list"),
    pytest.param({"attributes": "x"}, "attributes", id="attributes_a_string"),
    pytest.param({"attributes": None}, "attributes", id="attributes_null"),
    pytest.param({"attributes": {"k": "v\u0000"}}, "attributes", id="attributes_value_with_nul"),
    pytest.param({"attributes": {"k\u0000": 1}}, "attributes", id="attributes_key_with_nul"),
    pytest.param(
        {"attributes": {"deep": [{"k": "\u0000"}]}},
        "attributes",
        id="attributes_nested_nul",
    ),
    pytest.param({"extra": 1}, "extra", id="unknown_field"),
]


@pytest.mark.parametrize("changes, field", BAD_PROFILES)
def test_create_profile_bad_input_is_refused_naming_the_field_and_stores_nothing(
    api: ApiClient, counts: Any, changes: dict[str, Any], field: str
) -> None:
    before = counts()
    response = api.post("/profiles", _with({"name": "alice", "attributes": {"a": 1}}, changes))
    assert_error(response, (400, 422), field)
    assert counts() == before


BAD_MOVES = [
    pytest.param({}, "position", id="position_missing"),
    pytest.param({"position": 0}, "position", id="position_zero"),
    pytest.param({"position": -1}, "position", id="position_negative"),
    pytest.param({"position": "1"}, "position", id="position_string"),
    pytest.param({"position": 1.5}, "position", id="position_float"),
    pytest.param({"position": True}, "position", id="position_bool"),
    pytest.param({"position": None}, "position", id="position_null"),
    pytest.param({"position": 1, "extra": 1}, "extra", id="unknown_field"),
]


@pytest.mark.parametrize("body, field", BAD_MOVES)
def test_move_batch_bad_input_is_refused_naming_the_field_and_changes_nothing(
    api: ApiClient,
    profile_ids: list[int],
    counts: Any,
    body: dict[str, Any],
    field: str,
) -> None:
    batches = running_and_queued(api, profile_ids, 2)
    before = counts()
    response = api.post(f"/batches/{batches[2]['id']}/move", body)
    assert_error(response, (400, 422), field)
    assert counts() == before


def _raw(api: ApiClient, path: str, data: bytes | str, content_type: str = "application/json") -> Any:
    return api.client.post(
        f"/api/v1{path}",
        data=data,
        headers=api.headers | {"Content-Type": content_type},
    )


MALFORMED = [
    pytest.param("{", "application/json", 400, id="truncated_json"),
    pytest.param("{'name': 'a'}", "application/json", 400, id="single_quotes"),
    pytest.param("", "application/json", 400, id="empty_body"),
    pytest.param(b'{"name": "\xff"}', "application/json", 400, id="not_utf8"),
    pytest.param('{"name": "a"}', "text/plain", (400, 415), id="not_declared_json"),
    pytest.param("[]", "application/json", (400, 422), id="json_array"),
    pytest.param('[{"name": "a"}]', "application/json", (400, 422), id="json_array_of_object"),
    pytest.param("null", "application/json", (400, 422), id="json_null"),
    pytest.param('"text"', "application/json", (400, 422), id="json_string"),
    pytest.param("42", "application/json", (400, 422), id="json_number"),
]


@pytest.mark.parametrize("path", ["/batches", "/profiles", "/batches/2/move"])
@pytest.mark.parametrize("data, content_type, status", MALFORMED)
def test_post_malformed_body_is_refused_and_stores_nothing(
    api: ApiClient,
    profile_ids: list[int],
    counts: Any,
    path: str,
    data: Any,
    content_type: str,
    status: Any,
) -> None:
    running_and_queued(api, profile_ids, 2)
    before = counts()
    assert_error(_raw(api, path, data, content_type), status)
    assert counts() == before


@pytest.mark.parametrize("path", ["/batches", "/profiles", "/batches/2/move"])
def test_post_body_over_1_mib_is_refused_with_413_and_stores_nothing(
    api: ApiClient, profile_ids: list[int], counts: Any, path: str
) -> None:
    running_and_queued(api, profile_ids, 2)
    before = counts()
    body = json.dumps(
        {
            "name": "x" * ONE_MIB,
            "profile_ids": profile_ids,
            "processor": "noop",
            "position": 1,
        }
    )
    error = assert_error(_raw(api, path, body), 413)
    assert error["code"]
    assert counts() == before


def test_post_body_just_under_1_mib_is_read(api: ApiClient, counts: Any) -> None:
    padding = "x" * (ONE_MIB - 1000)
    response = api.post("/profiles", {"name": "big", "attributes": {"padding": padding}})
    assert response.status_code == 201, response.get_json()
    assert counts()["profiles"] == 1


BAD_QUERIES = [
    pytest.param("/batches?per_page=0", "per_page", id="batches_per_page_0"),
    pytest.param("/batches?per_page=501", "per_page", id="batches_per_page_501"),
    pytest.param("/batches?per_page=abc", "per_page", id="batches_per_page_text"),
    pytest.param("/batches?per_page=-5", "per_page", id="batches_per_page_negative"),
    pytest.param("/batches?page=0", "page", id="batches_page_0"),
    pytest.param("/batches?page=x", "page", id="batches_page_text"),
    pytest.param("/batches?status=bogus", "status", id="batches_status_bogus"),
    pytest.param("/batches?status=", "status", id="batches_status_empty"),
    pytest.param("/batches?status=QUEUED", "status", id="batches_status_wrong_case"),
    pytest.param("/profiles?per_page=0", "per_page", id="profiles_per_page_0"),
    pytest.param("/profiles?per_page=501", "per_page", id="profiles_per_page_501"),
    pytest.param("/profiles?page=0", "page", id="profiles_page_0"),
    pytest.param("/batches/1/items?per_page=0", "per_page", id="items_per_page_0"),
    pytest.param("/batches/1/items?per_page=501", "per_page", id="items_per_page_501"),
    pytest.param("/batches/1/logs?per_page=501", "per_page", id="logs_per_page_501"),
    pytest.param("/batches/1/logs?after=abc", "after", id="logs_after_text"),
    pytest.param("/batches/1/logs?after=-1", "after", id="logs_after_negative"),
    pytest.param(f"/batches/1/logs?after={2**63}", "after", id="logs_after_past_bigint"),
    pytest.param(f"/batches?page={2**31}", "page", id="batches_page_past_int"),
    pytest.param(f"/batches?page={10**30}", "page", id="batches_page_huge"),
    pytest.param(f"/profiles?page={10**30}", "page", id="profiles_page_huge"),
    pytest.param(f"/batches/1/items?page={10**30}", "page", id="items_page_huge"),
    pytest.param(f"/batches/1/logs?page={10**30}", "page", id="logs_page_huge"),
]


@pytest.mark.parametrize("url, field", BAD_QUERIES)
def test_list_unknown_query_value_is_refused_naming_the_parameter(
    api: ApiClient, profile_ids: list[int], url: str, field: str
) -> None:
    api.batch(profile_ids)
    assert_error(api.get(url), (400, 422), field)


@pytest.mark.parametrize("url", ["/batches?per_page=1", "/batches?per_page=500", "/profiles?per_page=500"])
def test_list_per_page_bounds_are_accepted(api: ApiClient, url: str) -> None:
    response = api.get(url)
    assert response.status_code == 200
    assert response.get_json()["per_page"] == int(url.rsplit("=", 1)[1])


@pytest.mark.parametrize(
    "url",
    [
        f"/batches?page={2**31 - 1}&per_page=500",
        f"/profiles?page={2**31 - 1}&per_page=500",
        f"/batches/1/items?page={2**31 - 1}&per_page=500",
        f"/batches/1/logs?after={2**63 - 1}",
    ],
)
def test_list_far_past_the_end_is_an_empty_page(api: ApiClient, profile_ids: list[int], url: str) -> None:
    api.batch(profile_ids)
    response = api.get(url)
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["items"] == []
