"""Template helpers: how a status, a queue position, a time and a duration read on the pages."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from flask import Flask, current_app
from markupsafe import Markup

from app.models import Batch, BatchStatus
from app.models._types import utcnow
from app.services.waiting import queue_view, waiting_of

STATUS_WORDS = {status.value: status.value.replace("_", " ") for status in BatchStatus}


def status_word(status: str) -> str:
    """`in_progress` reads `in progress`."""
    return STATUS_WORDS.get(status, status)


def position_label(batch: Batch) -> str:
    """The Queue Position cell: #k for queued, In Progress / Stopping for the running one, - otherwise."""
    if batch.status == BatchStatus.QUEUED and batch.queue_position:
        return f"#{batch.queue_position}"
    if batch.status == BatchStatus.IN_PROGRESS:
        return "In Progress"
    if batch.status == BatchStatus.STOPPING:
        return "Stopping"
    return "-"


def short_time(value: datetime | None) -> str:
    """A UTC time: HH:MM:SS today, with the date otherwise."""
    if value is None:
        return "-"
    if value.date() == utcnow().date():
        return value.strftime("%H:%M:%S")
    return value.strftime("%Y-%m-%d %H:%M")


def moment(value: datetime | None, style: str = "short") -> Markup | str:
    """A time as the pages show it: UTC from the server, the browser's time zone once app.js has run.

    The title keeps the UTC time, so hovering always tells the absolute time.
    """
    if value is None:
        return "-"
    text = clock(value) if style == "clock" else short_time(value)
    utc = value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return Markup('<time datetime="{}" data-local-time="{}" title="{}">{}</time>').format(
        value.isoformat(), style, utc, text
    )


def iso(value: datetime | None) -> str:
    return value.isoformat() if value is not None else ""


def duration(start: datetime | None, end: datetime | None) -> str:
    """How long between two times (until now when it hasn't ended): 850 ms, 12.3 s, 4m 05s, 2h 03m."""
    if start is None:
        return "-"
    return format_seconds(((end or utcnow()) - start) / timedelta(seconds=1))


def format_seconds(seconds: float) -> str:
    seconds = max(seconds, 0.0)
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def service_problems() -> list[str]:
    """The banner's sentences, from the same view of the queue as the rest of the page."""
    health = queue_view().health
    current_app.extensions["health_watch"].served(health)  # so a change it missed still reaches the page
    return health.problems()


def clock(value: datetime | None) -> str:
    """HH:MM in UTC; the page turns it into the browser's time (app.js)."""
    return value.strftime("%H:%M") if value is not None else "-"


def percent(part: int, whole: int) -> float:
    return round(100.0 * part / whole, 2) if whole else 0.0


def register(app: Flask) -> None:
    """Make the helpers available to every template."""
    app.jinja_env.filters.update(
        status_word=status_word,
        position_label=position_label,
        short_time=short_time,
        iso=iso,
        clock=clock,
        percent=percent,
    )
    app.jinja_env.globals.update(
        duration=duration,
        moment=moment,
        position_label=position_label,
        waiting_of=waiting_of,
        service_problems=service_problems,
    )
