"""The profiles page: list (with a name filter) and create."""

from __future__ import annotations

import json

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from flask_login import login_required
from flask_wtf import FlaskForm
from wtforms import StringField, TextAreaField
from wtforms.validators import DataRequired, Length, ValidationError

from app.errors import Conflict
from app.services import profiles

bp = Blueprint("profiles", __name__)

PER_PAGE = 100


class ProfileForm(FlaskForm):
    name = StringField("Name", validators=[DataRequired(), Length(min=1, max=200)])
    attributes = TextAreaField("Attributes (JSON object, optional)", default="")

    def validate_attributes(self, field: TextAreaField) -> None:
        if not (field.data or "").strip():
            return
        try:
            value = json.loads(field.data)
        except ValueError as exc:
            raise ValidationError("Not valid JSON.") from exc
        if not isinstance(value, dict):
            raise ValidationError('Must be a JSON object, like {"region": "eu"}.')


@bp.before_request
@login_required
def require_sign_in() -> None:
    """Every page needs a signed-in user."""


def _render(form: ProfileForm, status: int = 200) -> ResponseReturnValue:
    page = max(request.args.get("page", 1, type=int), 1)
    query = (request.args.get("q") or "").strip()
    listing = profiles.list_profiles(page, PER_PAGE, query or None)
    last_page = max(1, -(-listing.total // PER_PAGE))
    return render_template("profiles/index.html", form=form, listing=listing, q=query, last_page=last_page), status


@bp.get("/profiles")
def index() -> ResponseReturnValue:
    return _render(ProfileForm())


@bp.post("/profiles")
def create() -> ResponseReturnValue:
    form = ProfileForm()
    if not form.validate_on_submit():
        return _render(form, 422)
    attributes = json.loads(form.attributes.data) if (form.attributes.data or "").strip() else {}
    try:
        profile = profiles.create_profile(form.name.data or "", attributes)
    except Conflict:
        form.name.errors = [*form.name.errors, "A profile with this name already exists."]
        return _render(form, 409)
    flash(f"Profile “{profile.name}” created.", "success")
    return redirect(url_for("profiles.index"))
