"""Reading requests through marshmallow."""

from __future__ import annotations

from typing import Any

from flask import request
from marshmallow import Schema

from app.errors import AppError


class MalformedBody(AppError):
    status = 400
    code = "malformed_body"


def json_body() -> dict[str, Any]:
    """Return the request's JSON object, or refuse a body that is not one."""
    data = request.get_json(silent=True)
    if data is None:
        raise MalformedBody("the body must be a JSON object (Content-Type: application/json)")
    if not isinstance(data, dict):
        raise MalformedBody("the body must be a JSON object", {"_schema": ["expected an object"]})
    return data


def load_body(schema: Schema) -> dict[str, Any]:
    """Validate the JSON body; marshmallow's ValidationError becomes a 422 naming the fields."""
    return schema.load(json_body())


def load_args(schema: Schema) -> dict[str, Any]:
    """Validate query-string arguments, ignoring unknown ones."""
    return schema.load(request.args.to_dict(), unknown="exclude")


def page_body(page: Any, item_schema: Schema) -> dict[str, Any]:
    """The list envelope of the contract."""
    return {
        "items": item_schema.dump(page.items, many=True),
        "total": page.total,
        "page": page.page,
        "per_page": page.per_page,
    }
