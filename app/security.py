"""Response hardening: the Content-Security-Policy and other headers, cookie flags, trusted proxies.

The pages run no inline code: every script and style is a file under app/static,
so the policy can forbid inline script and style outright, and an injected
`<script>` or `onclick=` does nothing.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, Response, current_app, has_request_context, request
from werkzeug.middleware.proxy_fix import ProxyFix

from app.config import Settings

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        # The favicon is an empty data: URL (base.html), so the browser asks for none.
        "img-src 'self' data:",
        "connect-src 'self'",
        "frame-ancestors 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        "object-src 'none'",
    )
)
HSTS = "max-age=31536000; includeSubDomains"


class HardenedResponse(Response):
    """A response whose cookies are Secure whenever the request came over HTTPS.

    Flask's session and Flask-Login's remember cookie both go through set_cookie;
    their static *_COOKIE_SECURE settings cover PREFERRED_URL_SCHEME=https, and
    this covers an HTTPS request seen through a trusted proxy (request.is_secure).
    """

    def set_cookie(self, key: str, *args: Any, **kwargs: Any) -> None:
        if has_request_context() and request.is_secure:
            kwargs["secure"] = True
        super().set_cookie(key, *args, **kwargs)


def init_app(app: Flask, settings: Settings) -> None:
    """Trust the configured proxy hops, flag the cookies and add the headers to every response."""
    if settings.trusted_proxies:
        hops = settings.trusted_proxies
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops, x_port=hops)  # type: ignore[method-assign]
    https = settings.preferred_url_scheme == "https"
    app.response_class = HardenedResponse
    app.config.update(
        PREFERRED_URL_SCHEME=settings.preferred_url_scheme,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=https,
        REMEMBER_COOKIE_HTTPONLY=True,
        REMEMBER_COOKIE_SAMESITE="Lax",
        REMEMBER_COOKIE_SECURE=https,
    )
    app.after_request(_headers)


def _headers(response: Response) -> Response:
    headers = response.headers
    headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("Referrer-Policy", "same-origin")
    # HSTS only means something over HTTPS; sent over plain HTTP it would be ignored at best.
    if request.is_secure or current_app.config["PREFERRED_URL_SCHEME"] == "https":
        headers.setdefault("Strict-Transport-Security", HSTS)
    return response
