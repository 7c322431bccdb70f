"""The admin pages' forms: a new token, a new user, and the user and role a change is for."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from app.models import Role
from app.services.accounts import DURATION

ROLES = [role.value for role in Role]
NAME = validate.Length(min=1, max=200)


class TokenCreateForm(Schema):
    name = fields.String(required=True, validate=NAME)
    role = fields.String(load_default=Role.OPERATOR.value, validate=validate.OneOf(ROLES))
    # Empty: the token never expires.
    expires_in = fields.String(
        load_default="", validate=validate.Regexp(rf"{DURATION.pattern}|^$", error="like 90d, 12h, 30m or 45s")
    )


class TokenRevokeForm(Schema):
    name = fields.String(required=True, validate=NAME)


class UserCreateForm(Schema):
    name = fields.String(required=True, validate=NAME)
    password = fields.String(required=True, validate=validate.Length(min=1, max=1000))
    role = fields.String(load_default=Role.VIEWER.value, validate=validate.OneOf(ROLES))


class UserForm(Schema):
    name = fields.String(required=True, validate=NAME)


class UserRoleForm(UserForm):
    role = fields.String(required=True, validate=validate.OneOf(ROLES))
