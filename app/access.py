"""Which role each route needs: one mark on each view, checked before the view runs.

A view says what it needs with `@requires(Role.X)` or `@public`; the API's token check
and the pages' sign-in check both end in `authorize()`, which reads that mark. A view
with no mark needs `admin`, so a route added without a decision is closed rather than
open (and the role-matrix test names it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from flask import current_app, request

from app.errors import Forbidden
from app.models import Role

View = TypeVar("View", bound=Callable[..., object])

# The mark a view carries; PUBLIC means no credentials at all.
ATTRIBUTE = "required_role"
PUBLIC = "public"
# Routes Flask makes itself, whose views can't carry a mark.
PUBLIC_ENDPOINTS = {"static"}


def requires(role: Role) -> Callable[[View], View]:
    """Mark a view as needing at least `role`."""

    def mark(view: View) -> View:
        setattr(view, ATTRIBUTE, role)
        return view

    return mark


def public(view: View) -> View:
    """Mark a view as open to anyone (sign-in, health, the API description)."""
    setattr(view, ATTRIBUTE, PUBLIC)
    return view


def needed_role(endpoint: str | None) -> Role | None:
    """The role an endpoint needs, or None when it is public."""
    if endpoint in PUBLIC_ENDPOINTS:
        return None
    view = current_app.view_functions.get(endpoint or "")
    mark = getattr(view, ATTRIBUTE, Role.ADMIN)
    return None if mark == PUBLIC else Role(mark)


def is_public(endpoint: str | None) -> bool:
    return needed_role(endpoint) is None


def authorize(role: str) -> None:
    """Refuse the request when `role` may not use the endpoint it is for."""
    needed = needed_role(request.endpoint)
    if needed is not None and not Role(role).allows(needed):
        raise Forbidden(f"this needs the {needed.value} role; yours is {role}")
