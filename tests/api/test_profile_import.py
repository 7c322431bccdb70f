"""POST /profiles/import: CSV and JSON Lines, idempotent by name, all or nothing, errors by line."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.api.conftest import assert_error
from tests.conftest import ApiClient

CSV = "text/csv"
JSONL = "application/x-ndjson"


def post_file(api: ApiClient, content: str | bytes, content_type: str) -> Any:
    """POST a file's bytes to /profiles/import."""
    data = content.encode() if isinstance(content, str) else content
    return api.client.post("/api/v1/profiles/import", data=data, headers=api.headers | {"Content-Type": content_type})


def by_name(api: ApiClient) -> dict[str, dict[str, Any]]:
    return {p["name"]: p for p in api.get("/profiles?per_page=500").get_json()["items"]}


def test_import_csv_creates_profiles_with_tags_and_attribute_columns(api: ApiClient) -> None:
    content = 'name,tags,region,email\nberlin,eu-west gpu,eu,b@example.com\n"paris, fr","eu-west;fr",eu,\n'
    response = post_file(api, content, CSV)
    assert response.status_code == 200, response.get_json()
    assert response.get_json() == {"created": 2, "updated": 0}
    profiles = by_name(api)
    assert profiles["berlin"]["tags"] == ["eu-west", "gpu"]
    assert profiles["berlin"]["attributes"] == {"region": "eu", "email": "b@example.com"}
    assert profiles["paris, fr"]["tags"] == ["eu-west", "fr"]
    assert profiles["paris, fr"]["attributes"] == {"region": "eu"}


def test_import_json_lines_creates_profiles(api: ApiClient) -> None:
    lines = [{"name": "a", "attributes": {"n": [1, 2]}, "tags": ["x"]}, {"name": "b"}]
    content = "\n".join(json.dumps(line) for line in lines) + "\n\n"
    response = post_file(api, content, JSONL + "; charset=utf-8")
    assert response.get_json() == {"created": 2, "updated": 0}
    profiles = by_name(api)
    assert (profiles["a"]["attributes"], profiles["a"]["tags"]) == ({"n": [1, 2]}, ["x"])
    assert (profiles["b"]["attributes"], profiles["b"]["tags"]) == ({}, [])


def test_import_is_idempotent_by_name_and_updates_existing_profiles(api: ApiClient, counts: Any) -> None:
    existing = api.post("/profiles", {"name": "a", "attributes": {"old": True}, "tags": ["old"]}).get_json()
    content = "name,tags,v\na,new,1\nb,,2\n"
    assert post_file(api, content, CSV).get_json() == {"created": 1, "updated": 1}
    before = counts()
    assert post_file(api, content, CSV).get_json() == {"created": 0, "updated": 2}
    assert counts() == before
    profiles = by_name(api)
    assert profiles["a"]["id"] == existing["id"]
    assert (profiles["a"]["attributes"], profiles["a"]["tags"]) == ({"v": "1"}, ["new"])


@pytest.mark.parametrize(
    "content, line, field",
    [
        ("name,tags\nok,\n,x\n", 3, "name"),  # the header is line 1
        ("name,tags\nok,\nbad,has space!\n", 3, "tags"),
        ('name,tags,note\nok,,"two\nlines"\nbad,"a b",x,extra\n', 4, "_line"),  # a quoted cell spans lines 2-3
        ("name,tags\na,\n\nb,\na,\n", 5, "name"),  # a name twice in the file; blank lines still counted
        ("tags,region\nx,eu\n", 1, "_header"),
        ("name,name\na,b\n", 1, "_header"),
        ("", 1, "_header"),
        (b"name\nok\n\xff\n", 3, "_line"),
        ("name\nok\nnul\x00\n", 3, "_line"),
        ("name\n" + "x" * 201 + "\n", 2, "name"),
    ],
)
def test_import_bad_csv_line_is_422_naming_it_and_imports_nothing(
    api: ApiClient, counts: Any, content: str | bytes, line: int, field: str
) -> None:
    before = counts()
    error = assert_error(post_file(api, content, CSV), 422, "lines")
    assert error["message"].startswith(f"line {line}: "), error
    assert field in error["fields"]["lines"][str(line)], error
    assert "nothing was imported" in error["message"]
    assert counts() == before


@pytest.mark.parametrize(
    "content, line, field",
    [
        ('{"name": "a"}\n{"name": "b"\n', 2, "_line"),
        ('{"name": "a"}\n\n[1, 2]\n', 3, "_line"),
        ('{"name": "a"}\n{"name": "b", "colour": "red"}\n', 2, "colour"),
        ('{"name": "a"}\n{"name": "b", "attributes": []}\n', 2, "attributes"),
        ('{"name": "a", "tags": ["ok", ""]}\n', 1, "tags"),
    ],
)
def test_import_bad_json_line_is_422_naming_it_and_imports_nothing(
    api: ApiClient, counts: Any, content: str, line: int, field: str
) -> None:
    before = counts()
    error = assert_error(post_file(api, content, JSONL), 422, "lines")
    assert error["message"].startswith(f"line {line}: "), error
    assert field in error["fields"]["lines"][str(line)], error
    assert counts() == before


def test_import_names_every_bad_line(api: ApiClient) -> None:
    error = assert_error(post_file(api, "name,tags\n,x\nok,\n,y\n", CSV), 422)
    assert set(error["fields"]["lines"]) == {"2", "4"}
    assert "2 bad lines" in error["message"]


def test_import_of_an_existing_name_does_not_stop_a_bad_line_from_refusing_the_whole_file(
    api: ApiClient,
) -> None:
    api.post("/profiles", {"name": "a", "attributes": {"v": "0"}})
    assert_error(post_file(api, "name,v\na,1\n,2\n", CSV), 422)
    assert by_name(api)["a"]["attributes"] == {"v": "0"}


@pytest.mark.parametrize("content_type", ["application/json", "text/plain", None])
def test_import_other_content_type_is_400_and_imports_nothing(
    api: ApiClient, counts: Any, content_type: str | None
) -> None:
    before = counts()
    headers = api.headers | ({"Content-Type": content_type} if content_type else {})
    response = api.client.post("/api/v1/profiles/import", data=b"name\na\n", headers=headers)
    assert_error(response, 400, "Content-Type")
    assert counts() == before


def test_import_over_1_mib_is_413(api: ApiClient, counts: Any) -> None:
    before = counts()
    content = "name\n" + "".join(f"profile-{index:020d}\n" for index in range(40_000))
    assert len(content) > 1024 * 1024
    assert_error(post_file(api, content, CSV), 413)
    assert counts() == before


def test_import_of_10000_lines_in_one_file(api: ApiClient) -> None:
    content = "name,tags\n" + "".join(f"p{index:05d},bulk\n" for index in range(10_000))
    assert post_file(api, content, CSV).get_json() == {"created": 10_000, "updated": 0}
    assert api.get("/profiles?tag=bulk").get_json()["total"] == 10_000
