"""Log lines that say who and what they are about: the context, the JSON format, the setup.

LOG_FORMAT=json makes every process (web, worker, beat) write one JSON object
per line with `time`, `level`, `logger`, `message` and the context: the
`request_id` of the HTTP request that caused the work (it travels to the tasks
the request sends, see app/tasking.py), the `batch_id` and `task_id` of the task
at hand and the `actor` (token or user) who asked. The context lives in a
contextvar, so it follows a request's greenlet or thread and a task's run
without being passed around. `text` (the default) leaves every process's output
as it was.
"""

from __future__ import annotations

import logging
import re
import sys
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar, Token
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from pythonjsonlogger.json import JsonFormatter as _JsonFormatter

CONTEXT_FIELDS = ("batch_id", "task_id", "request_id", "actor")


@dataclass(frozen=True)
class LogContext:
    """What the lines logged right now are about; None where it does not apply."""

    request_id: str | None = None
    batch_id: int | None = None
    task_id: str | None = None
    actor: str | None = None


NO_CONTEXT = LogContext()  # frozen: safe to share as the default
_context: ContextVar[LogContext] = ContextVar("batchq_log_context", default=NO_CONTEXT)


def current() -> LogContext:
    """The context of the lines logged now."""
    return _context.get()


def enter(**values: Any) -> Token[LogContext]:
    """Start a context (a request, a task) with these values; `leave` with the token restores the one before."""
    return _context.set(LogContext(**values))


def leave(token: Token[LogContext]) -> None:
    """End the context `enter` started."""
    _context.reset(token)


def bind(**values: Any) -> None:
    """Add values to the current context (the actor, once the token is known); `leave` drops them too."""
    _context.set(replace(_context.get(), **values))


@contextmanager
def scope(**values: Any) -> Iterator[LogContext]:
    """A context for the lines logged inside the block."""
    token = enter(**values)
    try:
        yield current()
    finally:
        leave(token)


# A client's own X-Request-ID is kept only when it is short and plain: it is
# written into every line of the work it causes and sent back in a header.
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")


def new_request_id() -> str:
    """A fresh request id."""
    return uuid.uuid4().hex


def request_id_from(header: str | None) -> str:
    """The client's request id if it is sane, a generated one otherwise."""
    if header and _SANE_REQUEST_ID.fullmatch(header):
        return header
    return new_request_id()


class ContextFilter(logging.Filter):
    """Stamp each record with the context of the code that logged it, where it was logged.

    On the handler, it runs in the logging thread or greenlet at once, so the
    context is the one of the code that logged, even if the line is formatted
    later elsewhere. Fields a record already carries (the access line's
    request id) are kept.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        context = _context.get()
        for name in CONTEXT_FIELDS:
            if getattr(record, name, None) is None:
                setattr(record, name, getattr(context, name))
        return True


# Where a request leaves its actor for gunicorn's access line (app/request_ids.py): a WSGI environ key.
ACTOR_ENVIRON = "batchq.actor"

# The access line's fields, from gunicorn's atoms: the request, its answer and its time.
_ACCESS_ATOMS = {"method": "m", "path": "U", "query": "q", "status": "s", "remote_addr": "h", "bytes": "B"}


class JsonFormatter(_JsonFormatter):
    """One JSON object per record: time (ISO 8601, UTC), level, logger, message and the context."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(
            "%(asctime)s %(levelname)s %(name)s %(message)s " + " ".join(f"%({name})s" for name in CONTEXT_FIELDS),
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        )
        self._stamp = ContextFilter()

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802 (logging's name)
        return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")

    def format(self, record: logging.LogRecord) -> str:
        if record.name == "gunicorn.access" and isinstance(record.args, Mapping):
            _add_access_fields(record, record.args)
        self._stamp.filter(record)  # a handler without the filter still gets the context
        return str(super().format(record))


def _add_access_fields(record: logging.LogRecord, atoms: Mapping[str, Any]) -> None:
    # The request's own context is gone by the time gunicorn writes the line:
    # its id is read back from the answer's X-Request-ID header, its actor from the environ.
    for field, atom in _ACCESS_ATOMS.items():
        setattr(record, field, atoms.get(atom))
    if str(record.status).isdigit():  # type: ignore[attr-defined]
        record.status = int(record.status)  # type: ignore[attr-defined]
    record.duration_ms = round(int(atoms.get("D") or 0) / 1000, 3)
    record.request_id = atoms.get("{x-request-id}o") or None
    record.actor = atoms.get(f"{{{ACTOR_ENVIRON}}}e") or None


def json_line(logger: str, level: int, message: str) -> str:
    """One JSON line for text written outside logging (Celery's shutdown notices), with the context."""
    record = logging.LogRecord(logger, level, __file__, 0, message, None, None)
    return JsonFormatter().format(record) + "\n"


def _json_handler(stream: Any) -> logging.Handler:
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(ContextFilter())
    return handler


def use_json(handler: logging.Handler) -> None:
    """Make a handler someone else set up (Celery's) write JSON with the context."""
    handler.setFormatter(JsonFormatter())
    if not any(isinstance(f, ContextFilter) for f in handler.filters):
        handler.addFilter(ContextFilter())


def configure(log_format: str) -> None:
    """Set up the process's logging for the format; `text` leaves it as it was.

    Idempotent. Handlers already on the root logger (gunicorn's, from
    `gunicorn_logconfig`) are switched to JSON; without any, one on stderr is added.
    """
    if log_format != "json":
        return
    # Python prints warnings (Celery's SecurityWarning, say) to stderr as they are; as records they are JSON too.
    logging.captureWarnings(True)
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(_json_handler(sys.stderr))
    for handler in root.handlers:
        use_json(handler)
    if root.level == logging.NOTSET or root.level > logging.INFO:
        root.setLevel(logging.INFO)


def gunicorn_logconfig() -> dict[str, Any]:
    """gunicorn's `logconfig_dict` for JSON: its error log and every other logger on stderr, the access log on stdout.

    Each gunicorn logger has its own handler and does not propagate, so no line
    is written twice (gunicorn's defaults would write its error lines to both).
    """
    formatter = {"()": f"{__name__}.JsonFormatter"}
    context = {"()": f"{__name__}.ContextFilter"}

    def handler(stream: str) -> dict[str, Any]:
        return {
            "class": "logging.StreamHandler",
            "formatter": "json",
            "filters": ["context"],
            "stream": f"ext://sys.{stream}",
        }

    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": formatter},
        "filters": {"context": context},
        "handlers": {"stderr": handler("stderr"), "stdout": handler("stdout")},
        "root": {"level": "INFO", "handlers": ["stderr"]},
        "loggers": {
            "gunicorn.error": {"level": "INFO", "handlers": ["stderr"], "propagate": False},
            "gunicorn.access": {"level": "INFO", "handlers": ["stdout"], "propagate": False},
        },
    }
