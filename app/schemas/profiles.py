"""Profile bodies and responses."""

from marshmallow import Schema, fields, validate


class ProfileCreate(Schema):
    name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    attributes = fields.Dict(keys=fields.String(), load_default=dict)


class ProfileOut(Schema):
    id = fields.Integer()
    name = fields.String()
    attributes = fields.Dict()
    created_at = fields.DateTime()
