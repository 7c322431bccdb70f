"""Signing in and out of the pages (a session cookie, via Flask-Login)."""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Response,
    flash,
    redirect,
    render_template,
    request,
    url_for,
)
from flask.typing import ResponseReturnValue
from flask_login import LoginManager, UserMixin, current_user, login_user, logout_user
from flask_wtf import FlaskForm
from wtforms import BooleanField, PasswordField, StringField
from wtforms.validators import DataRequired, Length

from app.extensions import db
from app.models import User
from app.services.accounts import authenticate_user

bp = Blueprint("auth", __name__)
login_manager = LoginManager()
login_manager.login_view = "auth.login"
login_manager.login_message = "Please sign in to see this page."
login_manager.login_message_category = "info"


class SignedIn(UserMixin):
    """The signed-in user as the session knows them (a plain value, no ORM object)."""

    def __init__(self, user_id: int, username: str) -> None:
        self.id = user_id
        self.username = username


@login_manager.user_loader
def load_user(user_id: str) -> SignedIn | None:
    user = db.session.get(User, int(user_id)) if user_id.isdigit() else None
    return SignedIn(user.id, user.username) if user is not None else None


@login_manager.unauthorized_handler
def unauthorized() -> ResponseReturnValue:
    """Send the browser to /login; an htmx request is told to go there instead of swapping it in."""
    target = url_for("auth.login", next=request.full_path.rstrip("?"))
    if request.headers.get("HX-Request"):
        return Response(status=401, headers={"HX-Redirect": target})
    flash(login_manager.login_message, login_manager.login_message_category)
    return redirect(target)


class LoginForm(FlaskForm):
    username = StringField("Username", validators=[DataRequired(), Length(max=200)])
    password = PasswordField("Password", validators=[DataRequired()])
    remember = BooleanField("Keep me signed in")


def _safe_next(target: str | None) -> str:
    """Follow ?next= only within this site."""
    if not target:
        return url_for("batches.index")
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return url_for("batches.index")
    return target


@bp.route("/login", methods=["GET", "POST"])
def login() -> ResponseReturnValue:
    form = LoginForm()
    status = 200
    if form.validate_on_submit():
        user = authenticate_user(form.username.data or "", form.password.data or "")
        if user is not None:
            login_user(SignedIn(user.id, user.username), remember=bool(form.remember.data))
            return redirect(_safe_next(request.args.get("next")))
        form.password.errors.append("Unknown username or wrong password.")
        status = 401
    elif form.is_submitted():
        status = 400
    if current_user.is_authenticated and request.method == "GET":
        return redirect(_safe_next(request.args.get("next")))
    return render_template("auth/login.html", form=form), status


@bp.post("/logout")
def logout() -> ResponseReturnValue:
    form = FlaskForm()
    if form.validate_on_submit():
        logout_user()
        flash("Signed out.", "info")
    return redirect(url_for("auth.login"))
