"""The profiles page: list (filtered by name or tag), create, edit, delete with a confirmation, import a file.

Every form is a plain POST with a CSRF token, so all of it works without JavaScript.
"""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from flask_wtf import FlaskForm
from marshmallow import ValidationError as SchemaError
from wtforms import StringField, TextAreaField
from wtforms.validators import DataRequired, Length, ValidationError

from app.access import requires
from app.errors import Conflict, NotFound
from app.models import Profile, Role
from app.schemas.profiles import Tags
from app.services import profile_import, profiles
from app.services.profile_import import TAG_SEPARATORS, ImportErrors, describe
from app.views.auth import require_role

bp = Blueprint("profiles", __name__)

PER_PAGE = 100
# An uploaded file's format, by its name's ending.
IMPORT_SUFFIXES = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}


class ProfileForm(FlaskForm):
    name = StringField("Name", validators=[DataRequired(), Length(min=1, max=200)])
    attributes = TextAreaField("Attributes (JSON object, optional)", default="")
    tags = StringField("Tags (separated by spaces or commas)", default="")

    def validate_attributes(self, field: TextAreaField) -> None:
        if not (field.data or "").strip():
            return
        try:
            value = json.loads(field.data)
        except ValueError as exc:
            raise ValidationError("Not valid JSON.") from exc
        if not isinstance(value, dict):
            raise ValidationError('Must be a JSON object, like {"region": "eu"}.')

    def validate_tags(self, field: StringField) -> None:
        try:
            self.tag_list = Tags().deserialize([tag for tag in TAG_SEPARATORS.split(field.data or "") if tag])
        except SchemaError as exc:
            raise ValidationError("Tags are letters, digits and . _ : / - only, at most 64 each.") from exc

    def values(self) -> dict[str, Any]:
        """The validated form as the profile service takes it."""
        text = (self.attributes.data or "").strip()
        return {
            "name": self.name.data or "",
            "attributes": json.loads(text) if text else {},
            "tags": getattr(self, "tag_list", []),
        }

    def fill(self, profile: Profile) -> None:
        self.name.data = profile.name
        self.attributes.data = json.dumps(profile.attributes) if profile.attributes else ""
        self.tags.data = " ".join(profile.tags)


bp.before_request(require_role)


def _render(form: ProfileForm, status: int = 200, import_errors: dict[int, Any] | None = None) -> ResponseReturnValue:
    """The page, with an import's errors listed by line when there are some."""
    page = max(request.args.get("page", 1, type=int), 1)
    query = (request.args.get("q") or "").strip()
    tag = (request.args.get("tag") or "").strip()
    listing = profiles.list_profiles(page, PER_PAGE, query or None, tag or None)
    context = {
        "form": form,
        "listing": listing,
        "q": query,
        "tag": tag,
        "tags": profiles.tag_counts(),
        "last_page": max(1, -(-listing.total // PER_PAGE)),
        "import_errors": [(line, describe(fields)) for line, fields in sorted((import_errors or {}).items())],
    }
    return render_template("profiles/index.html", **context), status


@bp.get("/profiles")
@requires(Role.VIEWER)
def index() -> ResponseReturnValue:
    return _render(ProfileForm())


@bp.post("/profiles")
@requires(Role.OPERATOR)
def create() -> ResponseReturnValue:
    form = ProfileForm()
    if not form.validate_on_submit():
        return _render(form, 422)
    try:
        profile = profiles.create_profile(**form.values())
    except Conflict:
        form.name.errors = [*form.name.errors, "A profile with this name already exists."]
        return _render(form, 409)
    flash(f"Profile “{profile.name}” created.", "success")
    return redirect(url_for("profiles.index"))


def _live_profile(profile_id: int) -> Profile | None:
    try:
        return profiles.get_profile(profile_id)
    except NotFound:
        return None


def _gone() -> ResponseReturnValue:
    flash("That profile no longer exists.", "error")
    return redirect(url_for("profiles.index"))


@bp.route("/profiles/<int:profile_id>/edit", methods=["GET", "POST"])
@requires(Role.OPERATOR)
def edit(profile_id: int) -> ResponseReturnValue:
    profile = _live_profile(profile_id)
    if profile is None:
        return _gone()
    form = ProfileForm()
    if request.method == "GET":
        form.fill(profile)
        return render_template("profiles/edit.html", form=form, profile=profile)
    if not form.validate_on_submit():
        return render_template("profiles/edit.html", form=form, profile=profile), 422
    try:
        profile = profiles.update_profile(profile_id, form.values())
    except Conflict:
        form.name.errors = [*form.name.errors, "A profile with this name already exists."]
        return render_template("profiles/edit.html", form=form, profile=profiles.get_profile(profile_id)), 409
    flash(f"Profile “{profile.name}” saved.", "success")
    return redirect(url_for("profiles.index"))


@bp.route("/profiles/<int:profile_id>/delete", methods=["GET", "POST"])
@requires(Role.OPERATOR)
def delete(profile_id: int) -> ResponseReturnValue:
    profile = _live_profile(profile_id)
    if profile is None:
        return _gone()
    form = FlaskForm()
    if request.method == "GET":
        return render_template("profiles/delete.html", form=form, profile=profile)
    if not form.validate_on_submit():
        return render_template("profiles/delete.html", form=form, profile=profile, error="The form expired."), 400
    name = profile.name
    try:
        profiles.delete_profile(profile_id)
    except Conflict as exc:
        refused = profiles.get_profile(profile_id)
        return render_template("profiles/delete.html", form=form, profile=refused, error=exc.message), 409
    flash(f"Profile “{name}” deleted.", "success")
    return redirect(url_for("profiles.index"))


@bp.post("/profiles/import")
@requires(Role.OPERATOR)
def import_file() -> ResponseReturnValue:
    form = ProfileForm(formdata=None)
    upload = request.files.get("file")
    if not FlaskForm().validate_on_submit():
        return _render(form, 400, {0: {"form": ["The form expired; please upload the file again."]}})
    filename = (upload.filename or "").lower() if upload else ""
    kind = next((k for suffix, k in IMPORT_SUFFIXES.items() if filename.endswith(suffix)), None)
    if upload is None or kind is None:
        return _render(form, 422, {0: {"file": ["Choose a .csv or .jsonl file."]}})
    try:
        created, updated = profile_import.import_file(upload.read(), kind)
    except ImportErrors as exc:
        return _render(form, 422, exc.errors)
    flash(f"Imported {upload.filename}: {created} created, {updated} updated.", "success")
    return redirect(url_for("profiles.index"))
