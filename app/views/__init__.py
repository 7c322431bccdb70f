"""The server-rendered pages: sign-in, the batch table, batch pages, profiles."""

from __future__ import annotations

from flask import Flask, g
from flask_wtf.csrf import generate_csrf
from markupsafe import Markup

from app.errors import Forbidden


def init_app(app: Flask) -> None:
    """Register the page blueprints, sign-in and the template helpers."""
    from app.views import admin, auth, batches, filters, profiles

    auth.login_manager.init_app(app)
    app.register_error_handler(Forbidden, auth.forbidden_page)
    filters.register(app)
    app.jinja_env.trim_blocks = True
    app.jinja_env.lstrip_blocks = True
    # Every POST form carries this token; each view checks it through a FlaskForm.
    app.jinja_env.globals["csrf_token"] = generate_csrf
    app.jinja_env.globals["csrf_field"] = csrf_field
    app.register_blueprint(auth.bp)
    app.register_blueprint(batches.bp)
    app.register_blueprint(profiles.bp)
    app.register_blueprint(admin.bp)


def csrf_field() -> Markup:
    """A form's hidden CSRF input; none in a render shared between users (app/live/shared_render.py):
    there app.js adds the page's token as the form is submitted."""
    if g.get("shared_render"):
        return Markup("")
    return Markup('<input type="hidden" name="csrf_token" value="%s">') % generate_csrf()
