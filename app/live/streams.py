"""GET /live/events: one Server-Sent Events stream per browser tab."""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Iterator
from typing import Any

from flask import Response, current_app, request
from flask_login import current_user

from app.access import requires
from app.extensions import db
from app.live import bp, hub
from app.live.hub import CLOSED, Hub, Mailbox
from app.models import Role

# What the browser waits before reconnecting after a stream ends.
RETRY_MS = 500


def _last_event_id() -> int | None:
    raw = request.headers.get("Last-Event-ID") or request.args.get("last_event_id")
    try:
        return int(raw) if raw else None
    except ValueError:
        return None


@bp.get("/live/events")
@requires(Role.VIEWER)
def events() -> Response:
    if not current_user.is_authenticated:
        return Response("sign in first\n", status=401, mimetype="text/plain")
    live_hub = hub()
    mailbox = live_hub.open()
    current_app.extensions["health_watch"].ensure_running()
    if mailbox is None:
        return Response(
            "too many live streams on this process; poll instead\n",
            status=503,
            mimetype="text/plain",
            headers={"Retry-After": "30"},
        )
    last_id = _last_event_id()
    # The stream holds no database connection while it waits.
    db.session.remove()
    config = current_app.config
    body = _stream(
        live_hub,
        mailbox,
        last_id,
        float(config["LIVE_HEARTBEAT_SECONDS"]),
        float(config["LIVE_STREAM_SECONDS"]),
        float(config["LIVE_BURST_SECONDS"]),
    )
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no", "Connection": "keep-alive"}
    return Response(body, mimetype="text/event-stream", headers=headers)


def _stream(
    live_hub: Hub, mailbox: Mailbox, last_id: int | None, heartbeat: float, lifetime: float, burst_seconds: float
) -> Iterator[str]:
    """The stream's events. The first hint after a quiet spell goes at once; while changes keep
    coming (short batches back to back: three or four hints each), the stream sleeps out
    `burst_seconds` after each write and then writes what came meanwhile in one go, a repeated hint
    once. At 200 open pages, waking and writing once per hint per page was most of what the web
    process spent (docs/benchmarks.md, Viewers), and a page re-fetches once for a write of several
    hints as for one."""
    try:
        yield f"retry: {RETRY_MS}\n\n"
        current = live_hub.current_event_id()
        if last_id is not None and current > last_id:
            # The page missed hints while it was away: one catch-up makes it re-read.
            yield _event({"id": current, "kind": "catchup", "batch_id": None})
        deadline = time.monotonic() + lifetime
        while (remaining := deadline - time.monotonic()) > 0:
            hint = mailbox.get(timeout=min(heartbeat, remaining))
            if hint is CLOSED:
                return
            if hint is None:
                yield ": heartbeat\n\n"
                continue
            yield _event(hint)  # the first hint after a quiet spell goes at once
            while time.monotonic() < deadline:  # then one write per `burst_seconds` while hints keep coming
                if live_hub.closing.wait(burst_seconds):  # the process is stopping
                    return
                burst, closed = mailbox.take_all()
                if burst:
                    yield "".join(_event(more) for more in burst)
                if closed:
                    return
                if not burst:
                    break
    finally:
        live_hub.close(mailbox)


def _event(hint: dict[str, Any]) -> str:
    return _event_text(hint.get("id"), hint.get("kind"), hint.get("batch_id"))


@functools.lru_cache(maxsize=1024)
def _event_text(event_id: Any, kind: Any, batch_id: Any) -> str:
    """One hint as an event, written once for every stream of the process that sends it."""
    data = json.dumps({"kind": kind, "batch_id": batch_id})
    prefix = f"id: {event_id}\n" if event_id else ""
    return f"{prefix}event: batchq\ndata: {data}\n\n"
