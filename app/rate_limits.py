"""Rate limits: the API per token, sign-in per address and per account, counted in Redis.

The counters live in the app's Redis, so every web process (and every machine)
draws on the same allowance. Each app gets a Limiter of its own: Flask-Limiter
keeps its storage and switches on the instance, and a second app in the same
process (the tests make several) must not rewire the first.
"""

from __future__ import annotations

import hashlib
import time

from flask import Blueprint, Flask, Response, current_app, render_template, request
from flask_limiter import Limiter, RateLimitExceeded

from app import access
from app.config import Settings

# Sign-in limits count failures only: a user who signs in, out and in again is not guessing.
_FAILED = 400


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def address_key() -> str:
    """The client's address (the real one when TRUSTED_PROXIES lets ProxyFix unwrap it)."""
    return f"address:{request.remote_addr or 'unknown'}"


def api_key() -> str:
    """The bearer token, as the hash the database keeps of it; the address when there is none."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return f"token:{_digest(token.strip())}"
    return address_key()


def account_key() -> str:
    """The account a sign-in names, whether or not it exists (the answer must not tell)."""
    return f"account:{_digest((request.form.get('username') or '').strip().lower())}"


def _api_exempt() -> bool:
    """Health and the API's description are open to anyone and never limited."""
    return access.is_public(request.endpoint)


def _not_login() -> bool:
    return request.endpoint != "auth.login"


def _failed(response: Response) -> bool:
    return response.status_code >= _FAILED


def init_app(app: Flask, settings: Settings, api: Blueprint, auth: Blueprint) -> None:
    """Limit the API blueprint and POST /login; answer a breach with 429 and Retry-After."""
    limiter = Limiter(
        key_func=address_key,
        storage_uri=settings.redis_url,
        key_prefix=app.config.setdefault("RATELIMIT_KEY_PREFIX", "batchq-limits"),
        strategy="sliding-window-counter",
        # Redis unreachable: limit per process in memory meanwhile rather than fail every request.
        in_memory_fallback_enabled=True,
        swallow_errors=True,
        enabled=app.config.get("RATELIMIT_ENABLED", True),
    )
    limiter.init_app(app)
    app.extensions["batchq_limiter"] = limiter
    limiter.shared_limit(lambda: settings.rate_limit_api, scope="api", key_func=api_key, exempt_when=_api_exempt)(api)
    for scope, key in (("login-address", address_key), ("login-account", account_key)):
        limiter.shared_limit(
            lambda: settings.rate_limit_login,
            scope=scope,
            key_func=key,
            methods=["POST"],
            exempt_when=_not_login,
            deduct_when=_failed,
        )(auth)
    app.register_error_handler(RateLimitExceeded, too_many_requests)


def _retry_after(exc: RateLimitExceeded) -> int:
    """Whole seconds until the breached window lets a request through again."""
    limiter: Limiter = current_app.extensions["batchq_limiter"]
    current = limiter.current_limit
    if current is not None and current.breached:
        return max(1, int(current.reset_at - time.time()))
    return max(1, exc.limit.limit.get_expiry())


def too_many_requests(exc: RateLimitExceeded) -> Response:
    """The contract's JSON error for the API, a readable page for the sign-in form."""
    from app.api import bp as api_bp
    from app.api.errors import error_response

    seconds = _retry_after(exc)
    if request.blueprint == api_bp.name:
        message = f"too many requests ({exc.description}); retry in {seconds} s"
        response = error_response(429, "too_many_requests", message)
    else:
        response = Response(render_template("too_many_requests.html", seconds=seconds), status=429)
    response.headers["Retry-After"] = str(seconds)
    return response
