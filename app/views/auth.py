"""Signing in and out of the pages (a session cookie, via Flask-Login)."""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Response,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    url_for,
)
from flask.typing import ResponseReturnValue
from flask_login import (
    AnonymousUserMixin,
    LoginManager,
    UserMixin,
    current_user,
    login_required,
    login_user,
    logout_user,
)
from flask_wtf import FlaskForm
from wtforms import BooleanField, PasswordField, StringField
from wtforms.validators import DataRequired, Length

from app import access, logging_setup
from app.access import public
from app.errors import Forbidden
from app.live.recent_sessions import RecentSessions
from app.models import Role, User
from app.services.accounts import SessionKey, authenticate_user, session_user

bp = Blueprint("auth", __name__)
login_manager = LoginManager()
login_manager.login_view = "auth.login"
login_manager.login_message = "Please sign in to see this page."
login_manager.login_message_category = "info"


class SignedIn(UserMixin):
    """The signed-in user as the session knows them (a plain value, no ORM object)."""

    def __init__(self, user: User) -> None:
        self.id = user.id
        self.username = user.username
        self.role = user.role
        self.key = SessionKey(user.id, user.session_version)

    def get_id(self) -> str:
        # The session version rides in the cookie, so that bumping it ends the session (and a remember-me cookie).
        return str(self.key)

    def can(self, role: str) -> bool:
        """Whether the pages should offer this user what `role` may do."""
        return Role(self.role).allows(Role(role))


class SignedOut(AnonymousUserMixin):
    def can(self, role: str) -> bool:
        return False


login_manager.anonymous_user = SignedOut


@login_manager.user_loader
def load_user(session_id: str) -> SignedIn | None:
    if is_live_table_refetch():
        # Every open table page asks at each change: a session checked a moment ago counts (live/recent_sessions.py).
        recent: RecentSessions[SignedIn] = current_app.extensions["refetch_sessions"]
        return recent.get(session_id, lambda: _check_session(session_id))
    return _check_session(session_id)


def _check_session(session_id: str) -> SignedIn | None:
    key = SessionKey.parse(session_id)
    user = session_user(key) if key is not None else None
    return SignedIn(user) if user is not None else None


def is_live_table_refetch() -> bool:
    """A page's re-fetch of the live table region (app.js, on a hint): a GET of the table by htmx."""
    return (
        request.method == "GET" and request.endpoint == "batches.index" and request.headers.get("HX-Request") == "true"
    )


@login_required
def require_role() -> None:
    """What every page blueprint runs before its views: a signed-in user whose role the view allows."""
    logging_setup.bind(actor=f"user:{current_user.username}")
    access.authorize(current_user.role)


def forbidden_page(exc: Forbidden) -> ResponseReturnValue:
    """A page the signed-in user's role may not use (a control they were not offered, or an old link)."""
    return render_template("errors/403.html", message=exc.message), 403


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


# Sign-in rate limits (per address and per account) attach to this view.
@bp.route("/login", methods=["GET", "POST"])
@public
def login() -> ResponseReturnValue:
    form = LoginForm()
    status = 200
    if form.validate_on_submit():
        user = authenticate_user(form.username.data or "", form.password.data or "")
        if user is not None:
            login_user(SignedIn(user), remember=bool(form.remember.data))
            return redirect(_safe_next(request.args.get("next")))
        form.password.errors.append("Unknown username or wrong password.")
        status = 401
    elif form.is_submitted():
        status = 400
    if current_user.is_authenticated and request.method == "GET":
        return redirect(_safe_next(request.args.get("next")))
    return render_template("auth/login.html", form=form), status


@bp.post("/logout")
@public
def logout() -> ResponseReturnValue:
    form = FlaskForm()
    if form.validate_on_submit():
        logout_user()
        flash("Signed out.", "info")
    return redirect(url_for("auth.login"))
