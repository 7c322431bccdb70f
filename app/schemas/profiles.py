"""Profile bodies, responses, list arguments and one imported line."""

from typing import Any

from marshmallow import Schema, fields, validate

from app.models.profiles import TAG_MAX
from app.schemas.common import PageArgs

# Letters, digits and . _ : / - (no spaces or commas, so a CSV cell can list several).
TAG_PATTERN = r"^[\w.:/-]+$"


class Tag(fields.String):
    """One tag: 1..64 characters, no spaces, commas or semicolons."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(
            validate=[
                validate.Length(min=1, max=TAG_MAX),
                validate.Regexp(TAG_PATTERN, error="a tag is letters, digits and . _ : / - only"),
            ],
            **kwargs,  # type: ignore[arg-type]
        )


class Tags(fields.List):
    """A profile's tags: distinct, kept in sorted order."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(Tag(), validate=validate.Length(max=100), **kwargs)  # type: ignore[arg-type]

    def _deserialize(self, value: object, attr: str | None, data: object, **kwargs: object) -> list[Any | None]:
        tags = super()._deserialize(value, attr, data, **kwargs)
        return list(sorted({str(tag) for tag in tags}))


class ProfileCreate(Schema):
    name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    attributes = fields.Dict(keys=fields.String(), load_default=dict)
    tags = Tags(load_default=list)


class ProfilePatch(Schema):
    """Any of the fields; what is given replaces what was there (attributes and tags whole)."""

    name = fields.String(validate=validate.Length(min=1, max=200))
    attributes = fields.Dict(keys=fields.String())
    tags = Tags()


class ProfileOut(Schema):
    id = fields.Integer()
    name = fields.String()
    attributes = fields.Dict()
    tags = fields.List(fields.String())
    created_at = fields.DateTime()


class ProfileListArgs(PageArgs):
    tag = Tag()
    q = fields.String(validate=validate.Length(max=200))


class ImportResult(Schema):
    created = fields.Integer()
    updated = fields.Integer()
