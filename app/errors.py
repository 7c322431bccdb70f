"""The small family of errors the services raise; the API turns them into the contract's JSON."""

from __future__ import annotations

from collections.abc import Mapping


class AppError(Exception):
    """An error a client can act on, with the contract's code and HTTP status."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, fields: Mapping[str, object] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fields = fields


class NotFound(AppError):
    status = 404
    code = "not_found"


class Conflict(AppError):
    status = 409
    code = "conflict"


class InvalidInput(AppError):
    status = 422
    code = "validation_error"


class Unauthorized(AppError):
    status = 401
    code = "unauthorized"


class Forbidden(AppError):
    status = 403
    code = "forbidden"
