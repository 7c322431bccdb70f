"""Reading requests through marshmallow."""

from __future__ import annotations

from typing import Any

from flask import request
from marshmallow import Schema

from app.errors import AppError, InvalidInput
from app.schemas.common import query_data


class MalformedBody(AppError):
    status = 400
    code = "malformed_body"


def json_body() -> dict[str, Any]:
    """Return the request's JSON object, or refuse a body that is not one."""
    try:
        data = request.get_json(silent=True)
    except RecursionError:  # the json module's answer to very deep nesting
        raise MalformedBody("the body is nested too deeply") from None
    if data is None:
        raise MalformedBody("the body must be a JSON object (Content-Type: application/json)")
    if not isinstance(data, dict):
        raise MalformedBody("the body must be a JSON object", {"_schema": ["expected an object"]})
    refuse_nul(data)
    return data


def _has_nul(value: Any) -> bool:
    """Tell whether a JSON value holds a NUL in any string or key."""
    # Iterative, since the nesting depth is the client's to choose.
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def refuse_nul(data: dict[str, Any]) -> None:
    """Refuse text PostgreSQL can't store (NUL), naming the top-level field that holds it."""
    fields = {key: ["may not contain the NUL character"] for key, value in data.items() if _has_nul([key, value])}
    if fields:
        raise InvalidInput("text may not contain the NUL character", fields)


def load_body(schema: Schema) -> dict[str, Any]:
    """Validate the JSON body; marshmallow's ValidationError becomes a 422 naming the fields."""
    return schema.load(json_body())


def load_args(schema: Schema) -> dict[str, Any]:
    """Validate query-string arguments, ignoring unknown ones."""
    return schema.load(query_data(schema, request.args), unknown="exclude")


def page_body(page: Any, item_schema: Schema) -> dict[str, Any]:
    """The list envelope of the contract."""
    return {
        "items": item_schema.dump(page.items, many=True),
        "total": page.total,
        "page": page.page,
        "per_page": page.per_page,
    }
