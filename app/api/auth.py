"""Bearer tokens: every endpoint but health and openapi.json needs one, with the role the endpoint names."""

from __future__ import annotations

from flask import g, request

from app import access, logging_setup
from app.api import bp
from app.errors import Unauthorized
from app.services.accounts import authenticate_token


@bp.before_request
def require_token() -> None:
    # This is where the per-token rate limit belongs: after the token is known, before the view runs.
    if access.is_public(request.endpoint):
        return
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    record = authenticate_token(token.strip()) if scheme.lower() == "bearer" and token.strip() else None
    if record is None:
        raise Unauthorized("a valid 'Authorization: Bearer <token>' header is required")
    g.actor = f"token:{record.name}"
    logging_setup.bind(actor=g.actor)
    g.role = record.role
    g.token_id = record.id  # signs the completion webhooks of the batches it submits
    access.authorize(record.role)
