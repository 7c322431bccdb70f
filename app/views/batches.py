"""The batch table, the creation form, one batch's page, and the table's controls.

Every control calls the queue manager with the signed-in user's name; the
views never change a status themselves. A control answers an htmx request with
the refreshed table region and a plain form post with a redirect back.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import replace
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    flash,
    g,
    redirect,
    render_template,
    request,
    url_for,
)
from flask.typing import ResponseReturnValue
from flask_login import current_user
from flask_wtf import FlaskForm
from marshmallow import ValidationError
from werkzeug.datastructures import MultiDict

from app import live, processors
from app.access import requires
from app.downloads import attachment
from app.errors import AppError, InvalidInput
from app.live.shared_render import SharedRenders
from app.models import BatchStatus, Role
from app.schemas.batches import MoveForm
from app.schemas.queue import PolicyForm
from app.services import batches, callbacks, logs, profiles, queue_manager, screens
from app.services.queue_tx import FailurePolicy
from app.services.snapshots import read_snapshot, release_connection
from app.views.auth import is_live_table_refetch, require_role
from app.views.batch_form import (
    FormState,
    all_parameter_fields,
    apply_service_error,
    read_form,
    state_from_batch,
)
from app.views.table_query import TableQuery, read_table_query

bp = Blueprint("batches", __name__)

PER_PAGE = 50
# The newest hint a page's live re-fetch was told of (app.js); digits only, at most 18.
LIVE_EVENT_HEADER = "X-Live-Event-Id"
_EVENT_ID = re.compile(r"[0-9]{1,18}")
ITEMS_PER_PAGE = 100
# A batch page shows the newest LOG_PAGE lines and loads older pages of that size as the log is scrolled up.
LOG_PAGE = 200
# Lines one live append brings at most; the next hint brings the rest.
LOG_TAIL = 500
STATUSES = [status.value for status in BatchStatus]


bp.before_request(require_role)


@bp.before_request
def read_event_id() -> None:
    # Read the hint counter before the database, so a change landing in between is caught up.
    # A page's live re-fetch says which hint it was told of: a render that new shows it everything
    # it was told about, and every open page re-fetching at each change spares Redis a round trip each.
    # A number past what this process has relayed (another process's stream was quicker, or the number
    # is made up) is held to the counter itself: no render can be newer, and none is waited for in vain.
    told = request.headers.get(LIVE_EVENT_HEADER, "")
    if _EVENT_ID.fullmatch(told) and is_live_table_refetch():
        hub = live.hub()
        g.event_id = int(told) if int(told) <= hub.latest_id else min(int(told), hub.current_event_id())
    else:
        g.event_id = live.hub().current_event_id()


def _is_htmx() -> bool:
    return request.headers.get("HX-Request") == "true"


def _int_arg(name: str, default: int) -> int:
    value = request.args.get(name, type=int)
    return value if value is not None and value >= 1 else default


def _table_context(query: TableQuery) -> dict[str, Any]:
    read_snapshot()
    listing = batches.list_batches(query.page, PER_PAGE, query.filters())
    last_page = max(1, -(-listing.total // PER_PAGE))
    queue = queue_manager.snapshot()
    return {
        "listing": listing,
        "last_page": last_page,
        "query": query,
        "statuses": STATUSES,
        "queue": queue,
        "queued_last": queue.queued_count,  # the last queued batch's position
        "self_url": url_for("batches.index", **query.url_args()),
        "action_form": FlaskForm(),
        "policy": queue_manager.failure_policy(),
    }


@bp.get("/")
@bp.get("/batches")
@requires(Role.VIEWER)
def index() -> ResponseReturnValue:
    query = read_table_query(request.args)
    if _is_htmx():
        return _shared_table_region(query)
    context = _table_context(query)
    context.update(processor_names=processors.names(), creators=batches.creators())
    return render_template("batches/index.html", **context), 422 if query.errors else 200


def _shared_table_region(query: TableQuery) -> ResponseReturnValue:
    """The live re-fetch of the table: one render per change shared by the viewers with this role and query."""

    def render() -> str:
        g.shared_render = True  # the region leaves out the per-user CSRF token (app/live/shared_render.py)
        try:
            return render_template("batches/_table_region.html", **_table_context(query))
        finally:
            g.shared_render = False

    renders: SharedRenders = current_app.extensions["table_renders"]
    # The health generation: a render from before the workers left (or came back) shows the old waiting reasons.
    health = current_app.extensions["health_watch"].generation
    key = (current_user.role, url_for("batches.index", **query.url_args()), health)
    # Give the pooled connection back (checking the session took one) before waiting for another viewer's
    # render: that render reads through a connection of its own, and a pool held by its waiters left it
    # none (at 200 viewers every request waited out the pool's 30 s timeout and failed).
    release_connection()
    shared = renders.get(key, g.event_id, live.hub().current_event_id, render)
    status = 422 if query.errors else 200
    if request.accept_encodings["gzip"] > 0:  # compressed once per render, not once per viewer
        response = Response(shared.gzipped, status, mimetype="text/html", headers={"Content-Encoding": "gzip"})
    else:
        response = Response(shared.body, status, mimetype="text/html")
    response.vary.add("Accept-Encoding")
    return response


def _back_to_table() -> str:
    """Where a control returns: the table page it was pressed on (this site only)."""
    return _back_to_table_from(request.form.get("next"))


def _back_to_table_from(target: str | None) -> str:
    target = target or ""
    parts = urlsplit(target)
    if target.startswith("/") and not target.startswith("//") and not parts.netloc:
        return target
    return url_for("batches.index")


def _after_control() -> ResponseReturnValue:
    target = _back_to_table()
    if not _is_htmx():
        return redirect(target)
    parts = urlsplit(target)
    segments = parts.path.strip("/").split("/")
    if len(segments) == 2 and segments[0] == "batches" and segments[1].isdigit():
        return _detail_region(int(segments[1]))
    query = read_table_query(MultiDict(parse_qsl(parts.query)))
    return render_template("batches/_table_region.html", **_table_context(query))


def _control(run: Callable[[], str]) -> ResponseReturnValue:
    """Check the CSRF token, run one queue change, and report it in a flash message."""
    if not FlaskForm().validate_on_submit():
        flash("The form expired; please try again.", "error")
        return _after_control()
    try:
        message = run()
    except AppError as exc:
        flash(exc.message, "error")
    else:
        flash(message, "success")
    return _after_control()


def _confirm_page(batch_id: int, action: str) -> ResponseReturnValue:
    """Without JavaScript a Stop or Remove button leads here: the same question the dialog asks, as a page."""
    try:
        batch = batches.get_batch(batch_id)
    except AppError:
        abort(404)
    return render_template(
        "batches/confirm.html", batch=batch, action=action, next_url=_back_to_table_from(request.args.get("next"))
    )


@bp.route("/batches/<int:batch_id>/stop", methods=["GET", "POST"])
@requires(Role.OPERATOR)
def stop(batch_id: int) -> ResponseReturnValue:
    if request.method == "GET":
        return _confirm_page(batch_id, "stop")

    def run() -> str:
        batch = queue_manager.stop(batch_id, current_user.username)
        return f"Batch {batch.id} is {batch.status.replace('_', ' ')}; the queue is paused until Start."

    return _control(run)


@bp.route("/batches/<int:batch_id>/cancel", methods=["GET", "POST"])
@requires(Role.OPERATOR)
def cancel(batch_id: int) -> ResponseReturnValue:
    if request.method == "GET":
        return _confirm_page(batch_id, "cancel")

    def run() -> str:
        batch = queue_manager.cancel(batch_id, current_user.username)
        return f"Batch {batch.id} was removed from the queue."

    return _control(run)


@bp.post("/batches/<int:batch_id>/resume")
@requires(Role.OPERATOR)
def resume(batch_id: int) -> ResponseReturnValue:
    def run() -> str:
        batch = queue_manager.resume(batch_id, current_user.username)
        if batch.status == BatchStatus.QUEUED:
            return f"Batch {batch.id} is queued again at #{batch.queue_position}."
        return f"Batch {batch.id} resumed and started."

    return _control(run)


@bp.post("/batches/<int:batch_id>/retry")
@requires(Role.OPERATOR)
def retry(batch_id: int) -> ResponseReturnValue:
    def run() -> str:
        batch = queue_manager.retry(batch_id, current_user.username)
        return f"Batch {batch.id} “{batch.name}” retries the failed items of batch {batch_id}."

    return _control(run)


def _move(batch_id: int, step: int) -> ResponseReturnValue:
    def run() -> str:
        batch = queue_manager.move_by(batch_id, step, current_user.username)
        return f"Batch {batch.id} is now #{batch.queue_position}."

    return _control(run)


@bp.post("/batches/<int:batch_id>/move-up")
@requires(Role.OPERATOR)
def move_up(batch_id: int) -> ResponseReturnValue:
    return _move(batch_id, -1)


@bp.post("/batches/<int:batch_id>/move-down")
@requires(Role.OPERATOR)
def move_down(batch_id: int) -> ResponseReturnValue:
    return _move(batch_id, +1)


@bp.post("/batches/<int:batch_id>/move-top")
@requires(Role.OPERATOR)
def move_top(batch_id: int) -> ResponseReturnValue:
    return _move_to(batch_id, lambda: 1)


@bp.post("/batches/<int:batch_id>/move")
@requires(Role.OPERATOR)
def move_to(batch_id: int) -> ResponseReturnValue:
    """The "to position" form, also what a drag and drop sends: one move, to where it was dropped."""

    def position() -> int:
        try:
            data = MoveForm().load({"position": request.form.get("position", "").strip()})
        except ValidationError as exc:
            messages = exc.normalized_messages().get("position", ["is not valid"])
            raise InvalidInput(f"Position: {' '.join(messages)}", exc.normalized_messages()) from None
        return int(data["position"])

    return _move_to(batch_id, position)


def _move_to(batch_id: int, position: Callable[[], int]) -> ResponseReturnValue:
    def run() -> str:
        batch = queue_manager.move(batch_id, position(), current_user.username)
        return f"Batch {batch.id} is now #{batch.queue_position}."

    return _control(run)


@bp.post("/queue/start")
@requires(Role.OPERATOR)
def start() -> ResponseReturnValue:
    def run() -> str:
        snapshot = queue_manager.start(current_user.username)
        if snapshot.running is not None:
            return f"Queue started: batch {snapshot.running.id} is in progress."
        return "Queue started."

    return _control(run)


@bp.post("/queue/drain")
@requires(Role.OPERATOR)
def drain() -> ResponseReturnValue:
    def run() -> str:
        snapshot = queue_manager.drain(current_user.username)
        if snapshot.draining and snapshot.running is not None:
            return f"The queue pauses after batch {snapshot.running.id}."
        return "Nothing runs: the queue is paused."

    return _control(run)


@bp.post("/queue/policy")
@requires(Role.ADMIN)
def policy() -> ResponseReturnValue:
    """The table's failure-policy form: what the queue does after failed batches."""

    def run() -> str:
        raw = {key: request.form.get(key, "").strip() for key in ("on_failure", "pause_after_failures")}
        try:
            data = PolicyForm().load(raw)
        except ValidationError as exc:
            messages = exc.normalized_messages()
            text = "; ".join(f"{key.replace('_', ' ')}: {' '.join(value)}" for key, value in messages.items())
            raise InvalidInput(f"Failure policy: {text}", messages) from None
        chosen = queue_manager.set_failure_policy(
            FailurePolicy(data["on_failure"], data["pause_after_failures"]), current_user.username
        )
        return f"Failure policy: {_policy_words(chosen)}."

    return _control(run)


def _policy_words(policy: FailurePolicy) -> str:
    if policy.on_failure == "pause":
        return "pause after any failed batch"
    if policy.pause_after_failures:
        return f"continue, but pause after {policy.pause_after_failures} failed batches in a row"
    return "continue after failures"


# --- creation ------------------------------------------------------------------


def _render_new(state: FormState, status: int = 200) -> ResponseReturnValue:
    names = processors.names()
    if not state.processor and names:
        state.processor = "noop" if "noop" in names else names[0]
    context = {
        "state": state,
        "profiles": screens.profile_choices(),
        "tags": profiles.tag_counts(),
        "processors": [(name, processors.get(name)) for name in names],
        "param_fields": all_parameter_fields(),
        "item_timeout_default": current_app.config["ITEM_TIMEOUT_DEFAULT"],
        "form": FlaskForm(),
    }
    return render_template("batches/new.html", **context), status


@bp.get("/batches/new")
@requires(Role.OPERATOR)
def new() -> ResponseReturnValue:
    """The blank creation form, or with ?from=<id> one filled in as that batch was ("run again")."""
    source = request.args.get("from")
    if source is None:
        return _render_new(FormState())
    try:
        batch = batches.get_batch(int(source)) if source.isdigit() else None
    except AppError:
        batch = None
    if batch is None:
        flash(f"There is no batch {source} to run again; here is a blank form.", "error")
        return _render_new(FormState())
    return _render_new(state_from_batch(batch))


@bp.post("/batches")
@requires(Role.OPERATOR)
def create() -> ResponseReturnValue:
    csrf_ok = FlaskForm().validate_on_submit()
    state, data = read_form(request.form)
    if not csrf_ok:
        state.add_error("form", "The form expired; please submit it again.")
        return _render_new(state, 400)
    if data is None:
        return _render_new(state, 422)
    try:
        batch, _ = batches.create_batch(data, current_user.username)
    except InvalidInput as exc:
        apply_service_error(state, exc)
        return _render_new(state, 422)
    if batch.status == BatchStatus.QUEUED and batch.queue_position:
        message = f"Batch {batch.id} “{batch.name}” queued at #{batch.queue_position}."
    else:
        message = f"Batch {batch.id} “{batch.name}” started."
    flash(message, "success")
    return redirect(url_for("batches.index"))


# --- one batch -------------------------------------------------------------------


def _detail_context(batch_id: int) -> dict[str, Any]:
    read_snapshot()
    try:
        batch = batches.get_batch(batch_id)
    except AppError:
        abort(404)
    items_page = _int_arg("items_page", 1)
    items = screens.item_rows(batch_id, items_page, ITEMS_PER_PAGE)
    return {
        "batch": batch,
        "items": items,
        "items_last_page": max(1, -(-items.total // ITEMS_PER_PAGE)),
        "callback_deliveries": callbacks.deliveries_of(batch_id) if batch.callback_url else [],
        "callback_attempts": callbacks.attempts_of(batch_id) if batch.callback_url else [],
        "queued_last": queue_manager.get_next_position() - 1,
        "action_form": FlaskForm(),
        "self_url": url_for("batches.detail", batch_id=batch_id, items_page=items_page if items_page > 1 else None),
    }


def _detail_region(batch_id: int) -> ResponseReturnValue:
    return render_template("batches/_detail_region.html", **_detail_context(batch_id))


def _log_window() -> logs.Window:
    """The log's level filter and, paging back without scripts, the line the page ends before."""
    level = request.args.get("level") or None
    return logs.Window(
        level=level if level in logs.LEVELS else None,
        before=request.args.get("log_before", type=int) or None,
    )


def _older_page(batch_id: int, window: logs.Window) -> tuple[list[Any], bool]:
    """The newest LOG_PAGE lines of the window, and whether older ones are left (one line more is read)."""
    window = replace(window, before=window.before or logs.PAST_THE_END)
    lines = logs.read_page(batch_id, window, 0, LOG_PAGE + 1)
    return lines[-LOG_PAGE:], len(lines) > LOG_PAGE


@bp.get("/batches/<int:batch_id>")
@requires(Role.VIEWER)
def detail(batch_id: int) -> ResponseReturnValue:
    if _is_htmx():
        return _detail_region(batch_id)
    context = _detail_context(batch_id)
    window = _log_window()
    context["log_lines"], context["log_has_older"] = _older_page(batch_id, window)
    context["log_window"] = window
    context["log_levels"] = logs.LEVELS
    return render_template("batches/detail.html", **context)


@bp.get("/health-banner")
@requires(Role.VIEWER)
def health_banner() -> ResponseReturnValue:
    """The banner's live region: what keeps batches from moving, if anything."""
    return render_template("_health_problems.html")


@bp.get("/batches/<int:batch_id>/log")
@requires(Role.VIEWER)
def log(batch_id: int) -> ResponseReturnValue:
    """Log lines for the page's script: newer ones (?after=, appended live) or an older page (?before=)."""
    level = request.args.get("level") or None
    level = level if level in logs.LEVELS else None
    before = request.args.get("before", type=int)
    if before is not None:
        lines, more = _older_page(batch_id, logs.Window(level=level, before=before))
        return render_template("batches/_log_lines.html", log_lines=lines), {"X-Log-Older": "1" if more else "0"}
    window = logs.Window(level=level, after=request.args.get("after", type=int))
    return render_template("batches/_log_lines.html", log_lines=logs.read_page(batch_id, window, 0, LOG_TAIL))


@bp.get("/batches/<int:batch_id>/logs.txt", defaults={"fmt": "txt"})
@bp.get("/batches/<int:batch_id>/logs.jsonl", defaults={"fmt": "jsonl"})
@requires(Role.VIEWER)
def download_log(batch_id: int, fmt: str) -> ResponseReturnValue:
    """The whole log as a file, for the page's download links (the API's, under the browser session)."""
    try:
        export = logs.export(batch_id, fmt)
    except AppError:
        abort(404)
    return attachment(export)
