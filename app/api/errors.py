"""One JSON error shape for the whole API: {"error": {"code", "message", "fields"}}."""

from __future__ import annotations

import logging
from typing import Any

from flask import Response, jsonify, request
from marshmallow import ValidationError
from werkzeug.exceptions import HTTPException

from app.api import bp
from app.errors import AppError
from app.extensions import db

log = logging.getLogger(__name__)


def error_response(status: int, code: str, message: str, fields: dict[str, Any] | None = None) -> Response:
    """Build the contract's error body."""
    body: dict[str, Any] = {"code": code, "message": message}
    if fields:
        body["fields"] = fields
    response = jsonify({"error": body})
    response.status_code = status
    return response


@bp.errorhandler(AppError)
def app_error(exc: AppError) -> Response:
    db.session.rollback()
    return error_response(exc.status, exc.code, exc.message, dict(exc.fields) if exc.fields is not None else None)


@bp.errorhandler(ValidationError)
def validation_error(exc: ValidationError) -> Response:
    db.session.rollback()
    messages = exc.messages if isinstance(exc.messages, dict) else {"_schema": exc.messages}
    return error_response(422, "validation_error", "the request is not valid", messages)


@bp.errorhandler(HTTPException)
def http_error(exc: HTTPException) -> Response:
    db.session.rollback()
    code = (exc.name or "error").lower().replace(" ", "_")
    response = error_response(exc.code or 500, code, exc.description or exc.name)
    # The exception's own headers say what the client needs next: Allow on a 405 (RFC 9110),
    # Retry-After on a 429 or 503. Only the body is ours; its type stays JSON.
    for name, value in exc.get_headers():
        if name.lower() != "content-type":
            response.headers[name] = value
    return response


@bp.app_errorhandler(404)
@bp.app_errorhandler(405)
def routing_error(exc: HTTPException) -> Response | HTTPException:
    """Unmatched API URLs never reach the blueprint's handlers; answer them in JSON too."""
    if request.path.startswith(f"{bp.url_prefix}/"):
        return http_error(exc)
    return exc


@bp.errorhandler(Exception)
def unexpected_error(exc: Exception) -> Response:
    db.session.rollback()
    log.exception("unhandled error in the API")
    return error_response(500, "internal_error", "internal error; see the server log")
