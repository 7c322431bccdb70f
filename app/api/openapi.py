"""GET /openapi.json: the API described from the same marshmallow schemas that validate it."""

from __future__ import annotations

from functools import cache
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import current_app

from app.access import public
from app.api import bp
from app.api.batches import MAX_IDEMPOTENCY_KEY
from app.api.processor_spec import describe_callback_url, describe_processors
from app.schemas.batches import (
    BatchCreate,
    BatchListArgs,
    BatchOut,
    CallbackAttemptOut,
    ItemOut,
    LogArgs,
    LogOut,
    MoveBody,
    ResumeBody,
)
from app.schemas.common import ErrorSchema, PageArgs, list_schema
from app.schemas.profiles import ImportResult, ProfileCreate, ProfileListArgs, ProfileOut, ProfilePatch
from app.schemas.queue import HealthOut, PolicyBody, QueueOut
from app.services.logs import FORMATS

ERRORS = {
    "400": "a body that is not a JSON object (or not of the declared Content-Type)",
    "401": "no, bad, expired or revoked token",
    "403": "the token's role may not do this",
    "404": "unknown id",
    "409": "a state that forbids the action",
    "413": "body over 1 MiB",
    "422": "invalid input, named in `fields`",
    "429": "too many requests; Retry-After says when to try again",
}
# What any route behind a token can answer, whatever it does.
TOKEN_ERRORS = ("401", "403", "429")
# What reading a JSON body can answer.
BODY_ERRORS = ("400", "413", "422")


def _json(schema: Any) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


def _error(code: str) -> dict[str, Any]:
    response = {"description": ERRORS[code], **_json("Error")}
    if code == "429":
        response["headers"] = {"Retry-After": {"schema": {"type": "integer"}}}
    return response


def _op(summary: str, ok: tuple[str, Any], body: Any = None, query: Any = None, errors: tuple[str, ...] = ()) -> dict:
    codes = (*TOKEN_ERRORS, *errors, *(BODY_ERRORS if body is not None else ()), *(("422",) if query else ()))
    operation: dict[str, Any] = {
        "summary": summary,
        "responses": {ok[0]: {"description": "success", **_json(ok[1])}}
        | {code: _error(code) for code in sorted(set(codes))},
    }
    if body is not None:
        operation["requestBody"] = {"required": True, **_json(body)}
    if query is not None:
        operation["parameters"] = [{"in": "query", "schema": query}]
    return operation


def _download(summary: str, fmt: str) -> dict[str, Any]:
    """A streamed file: its media type, and the file name in Content-Disposition."""
    operation = _op(summary, ("200", {"type": "string"}), errors=("404",))
    operation["responses"]["200"] = {
        "description": "the file, streamed (Content-Disposition: attachment)",
        "headers": {"Content-Disposition": {"schema": {"type": "string"}}},
        "content": {FORMATS[fmt].split(";")[0]: {"schema": {"type": "string"}}},
    }
    return operation


def _id(name: str) -> list[dict[str, Any]]:
    return [{"in": "path", "name": name, "required": True, "schema": {"type": "integer"}}]


def _import_op() -> dict[str, Any]:
    operation = _op("Import profiles by name, all or nothing", ("200", "ImportResult"), errors=BODY_ERRORS)
    operation["description"] = (
        "CSV (header `name,tags,<attribute columns>`; tags split on spaces, commas or semicolons; empty cells"
        " left out) or JSON Lines (one ProfileCreate object a line). A profile whose name exists is updated"
        " (attributes and tags replaced). A bad line is named in a 422 (counted in the file, a CSV header"
        " being line 1) and nothing is imported. Bodies over 1 MiB get 413: split larger files."
    )
    text = {"schema": {"type": "string"}}
    operation["requestBody"] = {"required": True, "content": {"text/csv": text, "application/x-ndjson": text}}
    operation["responses"]["400"]["description"] = "another Content-Type"
    return operation


def _delete_op() -> dict[str, Any]:
    operation = _op("Delete a profile", ("204", "Error"), errors=("404", "409"))
    operation["responses"]["204"] = {"description": "deleted"}
    operation["responses"]["409"]["description"] = "a queued or running batch uses the profile"
    return operation


@cache
def _resume_op() -> dict[str, Any]:
    operation = _op("Queue a stopped batch again", ("200", "Batch"), errors=("404", "409", *BODY_ERRORS))
    operation["requestBody"] = {"required": False, **_json("Resume")}
    operation["responses"]["409"]["description"] = "the batch is not stopped"
    return operation


def _retry_op() -> dict[str, Any]:
    operation = _op("Run a failed batch's failed items as a new batch", ("201", "Batch"), errors=("404", "409"))
    operation["responses"]["201"]["headers"] = {"Location": {"schema": {"type": "string"}}}
    operation["responses"]["409"]["description"] = "the batch is not failed, or none of its items failed"
    return operation


def build_spec(
    http_allowed_hosts: tuple[str, ...] = (), callback_allowed_hosts: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Describe every endpoint of the contract, with the processors registered now.

    The `http` processor's URLs are narrowed to `http_allowed_hosts`, and
    `callback_url` to `callback_allowed_hosts`, since a request for any other
    host is refused however well formed.
    """
    spec = APISpec(
        title="batchq",
        version="1.0.0",
        openapi_version="3.0.3",
        plugins=[MarshmallowPlugin()],
        info={"description": "Batches of profiles, run one at a time by Celery workers."},
        servers=[{"url": "/api/v1"}],
        components={"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        security=[{"bearer": []}],
    )
    for name, schema in {
        "Error": ErrorSchema,
        "Profile": ProfileOut,
        "ProfileCreate": ProfileCreate,
        "ProfilePatch": ProfilePatch,
        "ImportResult": ImportResult,
        "ProfileList": list_schema(ProfileOut, "ProfileList"),
        "Batch": BatchOut,
        "BatchCreate": BatchCreate,
        "BatchList": list_schema(BatchOut, "BatchList"),
        "ItemList": list_schema(ItemOut, "ItemList"),
        "LogList": list_schema(LogOut, "LogList"),
        "CallbackAttemptList": list_schema(CallbackAttemptOut, "CallbackAttemptList"),
        "Move": MoveBody,
        "Resume": ResumeBody,
        "Queue": QueueOut,
        "FailurePolicy": PolicyBody,
        "Health": HealthOut,
    }.items():
        spec.components.schema(name, schema=schema)
    idem = {
        "in": "header",
        "name": "Idempotency-Key",
        "required": False,
        "schema": {"type": "string", "maxLength": MAX_IDEMPOTENCY_KEY},
    }
    create = _op("Create a batch", ("201", "Batch"), body="BatchCreateRequest", errors=("409",))
    create["parameters"] = [idem]
    create["responses"]["200"] = {"description": "repeat of an Idempotency-Key", **_json("Batch")}
    paths: dict[str, dict[str, Any]] = {
        "/profiles": {
            "post": _op("Create a profile", ("201", "Profile"), body="ProfileCreate", errors=("409",)),
            "get": _op("List profiles", ("200", "ProfileList"), query=ProfileListArgs),
        },
        "/profiles/import": {"post": _import_op()},
        "/profiles/{profile_id}": {
            "get": _op("Get a profile", ("200", "Profile"), errors=("404",)),
            "patch": _op("Edit a profile", ("200", "Profile"), body="ProfilePatch", errors=("404", "409")),
            "delete": _delete_op(),
        },
        "/batches": {"post": create, "get": _op("List batches", ("200", "BatchList"), query=BatchListArgs)},
        "/batches/{batch_id}": {"get": _op("Get a batch", ("200", "Batch"), errors=("404",))},
        "/batches/{batch_id}/items": {
            "get": _op("List a batch's items", ("200", "ItemList"), query=PageArgs, errors=("404",))
        },
        "/batches/{batch_id}/logs": {
            "get": _op(
                "List a batch's log, oldest first: after a line, or the lines just before one (not both), "
                "at a level and above",
                ("200", "LogList"),
                query=LogArgs,
                errors=("404",),
            )
        },
        "/batches/{batch_id}/callbacks": {
            "get": _op(
                "List the attempts at a batch's completion webhooks, oldest first",
                ("200", "CallbackAttemptList"),
                query=PageArgs,
                errors=("404",),
            )
        },
        "/batches/{batch_id}/logs.txt": {"get": _download("The whole log, one `at level message` a line", "txt")},
        "/batches/{batch_id}/logs.jsonl": {"get": _download("The whole log, one JSON object a line", "jsonl")},
        "/batches/{batch_id}/stop": {"post": _op("Stop the running batch", ("200", "Batch"), errors=("404", "409"))},
        "/batches/{batch_id}/cancel": {"post": _op("Remove a queued batch", ("200", "Batch"), errors=("404", "409"))},
        "/batches/{batch_id}/move": {
            "post": _op("Move a queued batch", ("200", "Batch"), body="Move", errors=("404", "409"))
        },
        "/batches/{batch_id}/resume": {"post": _resume_op()},
        "/batches/{batch_id}/retry": {"post": _retry_op()},
        "/queue": {"get": _op("The queue's state", ("200", "Queue"))},
        "/queue/start": {
            "post": _op(
                "Un-pause and start the head; while a batch runs, cancel a drain (else 409)",
                ("200", "Queue"),
                errors=("409",),
            )
        },
        "/queue/drain": {
            "post": _op(
                "Pause the queue when the running batch ends; with none running, pause at once (reason `drained`)",
                ("200", "Queue"),
            )
        },
        "/queue/policy": {
            "get": _op("The failure policy in force", ("200", "FailurePolicy")),
            "put": _op(
                "Change the failure policy (logged with who changed it)",
                ("200", "FailurePolicy"),
                body="FailurePolicy",
            ),
        },
        "/health": {
            "get": {
                "summary": "Health",
                "security": [],
                "responses": {
                    "200": {"description": "healthy", **_json("Health")},
                    "503": {"description": "degraded", **_json("Health")},
                    "429": _error("429"),
                },
            }
        },
    }
    describe_callback_url(spec, callback_allowed_hosts)
    describe_processors(spec, http_allowed_hosts)
    for path, operations in paths.items():
        parameters = _id(path.split("{")[1].split("}")[0]) if "{" in path else None
        spec.path(path=path, operations=operations, parameters=parameters)
    spec.path(
        path="/openapi.json",
        operations={
            "get": {
                "summary": "This description",
                "security": [],
                "responses": {"200": {"description": "OpenAPI 3", **_json({"type": "object"})}, "429": _error("429")},
            }
        },
    )
    spec.path(path="/metrics", operations={"get": _metrics_op()})
    described = _with_request_ids(spec.to_dict())
    # Served at the root, not under /api/v1: this path names its own server.
    described["paths"]["/metrics"]["servers"] = [{"url": "/"}]
    return described


# Every request may carry its own X-Request-ID, and every answer carries one (app/request_ids.py).
REQUEST_ID_PARAMETER = {
    "in": "header",
    "name": "X-Request-ID",
    "required": False,
    "description": "the caller's id for this request, kept in the answer and the logs when it is 1..128 of"
    " A-Z a-z 0-9 . _ : @ / + = - (another value is replaced by a generated one, not refused)",
    "schema": {"type": "string"},
}
REQUEST_ID_HEADER = {
    "description": "the request's own X-Request-ID when it was sane, else a generated one",
    "required": True,
    "schema": {"type": "string"},
}


def _with_request_ids(document: dict[str, Any]) -> dict[str, Any]:
    document["components"]["parameters"] = {"RequestId": REQUEST_ID_PARAMETER}
    document["components"]["headers"] = {"RequestId": REQUEST_ID_HEADER}
    for operations in document["paths"].values():
        for method, operation in operations.items():
            if method in ("parameters", "servers"):
                continue
            operation.setdefault("parameters", []).append({"$ref": "#/components/parameters/RequestId"})
            for response in operation["responses"].values():
                response.setdefault("headers", {})["X-Request-ID"] = {"$ref": "#/components/headers/RequestId"}
    return document


def _metrics_op() -> dict[str, Any]:
    text = {"text/plain": {"schema": {"type": "string"}}}
    return {
        "summary": "Prometheus metrics (text format 0.0.4): a token, or an address in METRICS_ALLOWED_HOSTS",
        "security": [{"bearer": []}, {}],
        "responses": {
            "200": {"description": "the metrics, names prefixed batchq_", "content": text},
            "401": {"description": "no valid token, from an address not allowed", "content": text},
        },
    }


@bp.get("/openapi.json")
@public
def openapi_json() -> dict[str, Any]:
    return build_spec(
        tuple(current_app.config.get("HTTP_PROCESSOR_ALLOWED_HOSTS", ())),
        tuple(current_app.config.get("CALLBACK_ALLOWED_HOSTS", ())),
    )
