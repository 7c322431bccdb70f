"""Bearer tokens: every endpoint but health and openapi.json needs one."""

from __future__ import annotations

from flask import g, request

from app.api import bp
from app.errors import Unauthorized
from app.services.accounts import authenticate_token

OPEN_ENDPOINTS = {"api.health", "api.openapi_json"}


@bp.before_request
def require_token() -> None:
    if request.endpoint in OPEN_ENDPOINTS:
        return
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    record = authenticate_token(token.strip()) if scheme.lower() == "bearer" and token.strip() else None
    if record is None:
        raise Unauthorized("a valid 'Authorization: Bearer <token>' header is required")
    g.actor = f"token:{record.name}"
