"""GET /openapi.json: a valid OpenAPI 3 document describing every path of the contract."""

from __future__ import annotations

import re
from typing import Any

import pytest
from flask import Flask
from openapi_spec_validator import validate

from tests.conftest import ApiClient

CONTRACT = [
    ("post", "/profiles"),
    ("get", "/profiles"),
    ("get", "/profiles/{id}"),
    ("patch", "/profiles/{id}"),
    ("delete", "/profiles/{id}"),
    ("post", "/profiles/import"),
    ("post", "/batches"),
    ("get", "/batches"),
    ("get", "/batches/{id}"),
    ("get", "/batches/{id}/items"),
    ("get", "/batches/{id}/logs"),
    ("get", "/batches/{id}/logs.txt"),
    ("get", "/batches/{id}/logs.jsonl"),
    ("get", "/batches/{id}/callbacks"),
    ("post", "/batches/{id}/stop"),
    ("post", "/batches/{id}/cancel"),
    ("post", "/batches/{id}/move"),
    ("get", "/queue"),
    ("post", "/queue/start"),
    ("get", "/health"),
    ("get", "/openapi.json"),
]


@pytest.fixture
def spec(app: Flask) -> dict[str, Any]:
    response = app.test_client().get("/api/v1/openapi.json")
    assert response.status_code == 200
    assert response.is_json
    return response.get_json()


def _operations(spec: dict[str, Any]) -> set[tuple[str, str]]:
    """The operations under /api/v1 (a path with servers of its own, /metrics, is served elsewhere)."""
    return {
        (method, re.sub(r"\{[^}]+\}", "{id}", path))
        for path, item in spec["paths"].items()
        if "servers" not in item
        for method in item
        if method in {"get", "post", "put", "patch", "delete"}
    }


def test_openapi_describes_metrics_at_the_root_as_text(spec: dict[str, Any], app: Flask) -> None:
    item = spec["paths"]["/metrics"]
    assert item["servers"] == [{"url": "/"}]
    assert "text/plain" in item["get"]["responses"]["200"]["content"]
    assert "/metrics" in {rule.rule for rule in app.url_map.iter_rules()}


def test_openapi_is_a_valid_openapi_3_document(spec: dict[str, Any]) -> None:
    assert spec["openapi"].startswith("3.")
    validate(spec)


def test_openapi_describes_every_path_of_the_contract(spec: dict[str, Any]) -> None:
    assert set(CONTRACT) <= _operations(spec)


def test_openapi_describes_every_api_route_the_app_serves(spec: dict[str, Any], app: Flask) -> None:
    served = {
        (method.lower(), re.sub(r"<[^>]+>", "{id}", rule.rule.removeprefix("/api/v1")))
        for rule in app.url_map.iter_rules()
        if rule.rule.startswith("/api/v1/")
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }
    assert served == _operations(spec)


def test_openapi_paths_are_relative_to_a_server_under_api_v1(
    spec: dict[str, Any],
) -> None:
    servers = [server["url"] for server in spec.get("servers", [])]
    assert any(url.rstrip("/").endswith("/api/v1") for url in servers), servers


def test_openapi_path_ids_are_integer_parameters(spec: dict[str, Any]) -> None:
    for path, item in spec["paths"].items():
        for name in re.findall(r"\{([^}]+)\}", path):
            parameters = item.get("parameters", []) + [
                p for op in item.values() if isinstance(op, dict) for p in op.get("parameters", [])
            ]
            declared = [p for p in parameters if p.get("in") == "path" and p.get("name") == name]
            assert declared and declared[0]["schema"]["type"] == "integer", path


def test_openapi_declares_bearer_auth_and_leaves_health_and_itself_open(
    spec: dict[str, Any],
) -> None:
    schemes = spec["components"]["securitySchemes"]
    assert any(s["type"] == "http" and s["scheme"].lower() == "bearer" for s in schemes.values())
    assert spec["security"]
    assert spec["paths"]["/health"]["get"]["security"] == []
    assert spec["paths"]["/openapi.json"]["get"]["security"] == []


@pytest.mark.parametrize(
    "schema, keys",
    [
        (
            "Batch",
            {
                "id",
                "name",
                "status",
                "queue_position",
                "processor",
                "parameters",
                "profile_ids",
                "progress",
                "created_at",
                "started_at",
                "finished_at",
                "error",
                "item_timeout",
                "callback_url",
                "retry_of",
                "waiting_code",
                "waiting_reason",
                "estimated_start_at",
            },
        ),
        ("Profile", {"id", "name", "attributes", "tags", "created_at"}),
        (
            "Queue",
            {
                "paused",
                "running",
                "queued_count",
                "start_enabled",
                "paused_by",
                "paused_at",
                "paused_reason",
                "draining",
            },
        ),
        ("Error", {"error"}),
    ],
)
def test_openapi_schemas_name_the_contract_fields(spec: dict[str, Any], schema: str, keys: set[str]) -> None:
    assert set(spec["components"]["schemas"][schema]["properties"]) == keys


def test_openapi_describes_item_timeout_as_a_number_of_seconds_from_1_to_86400(spec: dict[str, Any]) -> None:
    schemas = spec["components"]["schemas"]
    assert schemas["BatchCreate"]["properties"]["item_timeout"] == {"type": "number", "minimum": 1, "maximum": 86400}
    assert "item_timeout" not in schemas["BatchCreate"].get("required", [])
    assert schemas["Batch"]["properties"]["item_timeout"]["type"] == "number"


def test_openapi_batch_creation_documents_201_200_409_and_the_idempotency_key(
    spec: dict[str, Any],
) -> None:
    create = spec["paths"]["/batches"]["post"]
    assert {"201", "200", "401", "409", "413", "422"} <= set(create["responses"])
    assert any(p["in"] == "header" and p["name"] == "Idempotency-Key" for p in create["parameters"])


def test_openapi_needs_no_token_and_matches_what_api_clients_see(api: ApiClient, spec: dict[str, Any]) -> None:
    assert api.get("/openapi.json").get_json() == spec


def test_openapi_declares_401_403_and_429_on_every_route_behind_a_token(spec: dict[str, Any]) -> None:
    for path, item in spec["paths"].items():
        if "servers" in item:  # /metrics: no role (any token), no rate limit
            continue
        for method, operation in item.items():
            if method in {"get", "post", "put", "patch", "delete"} and operation.get("security") != []:
                assert {"401", "403", "429"} <= set(operation["responses"]), (method, path)


def test_openapi_declares_400_413_and_422_wherever_a_json_body_is_read(spec: dict[str, Any]) -> None:
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if isinstance(operation, dict) and "requestBody" in operation:
                assert {"400", "413", "422"} <= set(operation["responses"]), (method, path)


def test_openapi_names_the_registered_processors_each_with_its_parameters(spec: dict[str, Any]) -> None:
    from app import processors

    schemas = spec["components"]["schemas"]
    assert schemas["BatchCreate"]["properties"]["processor"]["enum"] == processors.names()
    body = spec["paths"]["/batches"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    union = schemas[body["$ref"].rsplit("/", 1)[1]]
    assert set(union["discriminator"]["mapping"]) == set(processors.names())
    sleep = schemas["BatchCreate.sleep"]["allOf"][1]
    assert sleep["properties"]["parameters"]["required"] == ["seconds"]
    assert sleep["required"] == ["parameters"]


def test_openapi_narrows_http_urls_to_the_allowed_hosts(app: Flask) -> None:
    from app.api.openapi import build_spec

    schemas = build_spec(("example.org",))["components"]["schemas"]
    url = schemas["BatchCreate.http"]["allOf"][1]["properties"]["parameters"]["properties"]["url"]
    assert re.match(url["pattern"], "https://example.org:8443/hook")
    assert not re.match(url["pattern"], "http://127.0.0.1/hook")


def test_openapi_narrows_callback_urls_to_the_allowed_hosts_and_with_none_allows_only_null(app: Flask) -> None:
    from app.api.openapi import build_spec

    narrowed = build_spec((), ("hooks.example.org",))["components"]["schemas"]["BatchCreate"]["properties"]
    assert re.match(narrowed["callback_url"]["pattern"], "https://hooks.example.org/batchq")
    assert not re.match(narrowed["callback_url"]["pattern"], "http://127.0.0.1/hook")
    assert narrowed["callback_url"]["maxLength"] == 2000
    closed = build_spec()["components"]["schemas"]["BatchCreate"]["properties"]["callback_url"]
    assert closed["enum"] == [None]


@pytest.mark.parametrize("method, path", [("put", "/queue"), ("delete", "/batches"), ("patch", "/openapi.json")])
def test_405_names_the_allowed_methods_in_the_contract_error_shape(api: ApiClient, method: str, path: str) -> None:
    response = api.client.open(f"/api/v1{path}", method=method.upper(), headers=api.headers)
    assert response.status_code == 405
    assert {"GET"} <= {m.strip() for m in response.headers["Allow"].split(",")}
    assert response.is_json and set(response.get_json()["error"]) == {"code", "message"}


def test_openapi_declares_x_request_id_on_every_operation_and_every_answer(spec: dict[str, Any]) -> None:
    assert spec["components"]["headers"]["RequestId"]["required"] is True
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            if method in ("parameters", "servers"):
                continue
            assert {"$ref": "#/components/parameters/RequestId"} in operation["parameters"], (path, method)
            for code, response in operation["responses"].items():
                assert response["headers"]["X-Request-ID"] == {"$ref": "#/components/headers/RequestId"}, (path, code)
