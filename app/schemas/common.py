"""Schemas shared by several resources."""

from typing import Any

from marshmallow import Schema, fields, validate
from werkzeug.datastructures import MultiDict

# No list has this many pages; the bound keeps the row offset inside PostgreSQL's bigint.
MAX_PAGE = 2**31 - 1


class PageArgs(Schema):
    """?page= and ?per_page= of every list."""

    page = fields.Integer(load_default=1, validate=validate.Range(min=1, max=MAX_PAGE))
    per_page = fields.Integer(load_default=50, validate=validate.Range(min=1, max=500))


class ErrorBody(Schema):
    code = fields.String(required=True)
    message = fields.String(required=True)
    fields = fields.Dict()  # type: ignore[assignment]  # the contract's name, though Schema has an attribute of it


class ErrorSchema(Schema):
    error = fields.Nested(ErrorBody)


def list_schema(item: type[Schema], name: str) -> type[Schema]:
    """Build the {"items", "total", "page", "per_page"} envelope for one item schema."""
    return Schema.from_dict(
        {
            "items": fields.List(fields.Nested(item)),
            "total": fields.Integer(),
            "page": fields.Integer(),
            "per_page": fields.Integer(),
        },
        name=name,
    )


def query_data(schema: Schema, args: MultiDict[str, str]) -> dict[str, Any]:
    """A query string as the schema reads it: every value of a list field, the first of any other."""
    multi = {field.data_key or name for name, field in schema.load_fields.items() if isinstance(field, fields.List)}
    return {key: values if key in multi else values[0] for key, values in args.lists()}
