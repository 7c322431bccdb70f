"""The JSON line format and the log context: every key on every line, the context of the code that logged."""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from app import logging_setup
from app.logging_setup import ContextFilter, JsonFormatter

KEYS = {"time", "level", "logger", "message", "batch_id", "task_id", "request_id", "actor"}


@pytest.fixture
def lines() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger writing JSON to a buffer, as a handler set up by configure('json') does."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(ContextFilter())
    logger = logging.getLogger("tests.logs.json")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield logger, out
    finally:
        logger.removeHandler(handler)


def parsed(out: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_a_line_has_every_key_and_the_context_where_it_applies(lines: tuple[logging.Logger, io.StringIO]) -> None:
    logger, out = lines
    logger.info("outside %s", "any context")
    with logging_setup.scope(request_id="req-1", batch_id=7, task_id="t-1"):
        logging_setup.bind(actor="token:ci")
        logger.warning("inside")
    logger.info("after")
    first, inside, after = parsed(out)
    assert set(first) == KEYS
    assert first["message"] == "outside any context" and first["level"] == "INFO"
    assert first["logger"] == "tests.logs.json" and first["time"].endswith("+00:00")
    assert [first[key] for key in ("batch_id", "task_id", "request_id", "actor")] == [None] * 4
    assert inside | {"time": None} == {
        "time": None,
        "level": "WARNING",
        "logger": "tests.logs.json",
        "message": "inside",
        "batch_id": 7,
        "task_id": "t-1",
        "request_id": "req-1",
        "actor": "token:ci",
    }
    assert after["request_id"] is None and after["actor"] is None  # leaving the scope dropped the bound actor too


def test_an_exception_stays_on_one_line(lines: tuple[logging.Logger, io.StringIO]) -> None:
    logger, out = lines
    try:
        raise ValueError("broken\nacross lines")
    except ValueError:
        logger.exception("it failed")
    assert len(out.getvalue().splitlines()) == 1
    (line,) = parsed(out)
    assert line["message"] == "it failed" and "ValueError: broken\nacross lines" in line["exc_info"]


def test_the_context_is_the_logging_threads_own(lines: tuple[logging.Logger, io.StringIO]) -> None:
    """Each request's thread (or greenlet) logs with its own id, whatever the others do at the same time."""
    logger, out = lines
    inside = threading.Barrier(4)

    def request(number: int) -> None:
        with logging_setup.scope(request_id=f"req-{number}"):
            inside.wait(timeout=10)  # all four contexts are set at once
            logger.info("from %d", number)

    threads = [threading.Thread(target=request, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted((line["message"], line["request_id"]) for line in parsed(out)) == [
        (f"from {n}", f"req-{n}") for n in range(4)
    ]


def test_the_filter_stamps_the_record_where_it_is_logged_and_keeps_what_it_carries() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "m", None, None)
    carried = logging.LogRecord("x", logging.INFO, __file__, 1, "m", None, None)
    carried.request_id = "from-the-answer"
    with logging_setup.scope(request_id="req-9", task_id="t-9"):
        ContextFilter().filter(record)
        ContextFilter().filter(carried)
    assert (record.request_id, record.task_id, record.batch_id) == ("req-9", "t-9", None)  # type: ignore[attr-defined]
    assert carried.request_id == "from-the-answer"  # type: ignore[attr-defined]


def test_gunicorns_access_line_carries_the_request_and_the_id_its_answer_had() -> None:
    atoms = {
        "h": "127.0.0.1",
        "m": "POST",
        "U": "/api/v1/batches",
        "q": "",
        "s": "201",
        "B": 512,
        "D": 12345,
        "{x-request-id}o": "req-42",
        "{batchq.actor}e": "token:ci",
    }
    record = logging.LogRecord(
        "gunicorn.access", logging.INFO, __file__, 1, '%(h)s "%(m)s %(U)s" %(s)s', (atoms,), None
    )
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == '127.0.0.1 "POST /api/v1/batches" 201'
    assert (line["method"], line["path"], line["status"], line["duration_ms"]) == (
        "POST",
        "/api/v1/batches",
        201,
        12.345,
    )
    assert line["request_id"] == "req-42" and line["remote_addr"] == "127.0.0.1"
    assert line["actor"] == "token:ci"


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        ("client-id-1", True),
        ("a.b:c/d+e=f@g_h-i", True),
        ("x" * 128, True),
        ("x" * 129, False),
        ("", False),
        ("has space", False),
        ("new\nline", False),
        ('quote"', False),
        ("ünïcode", False),
        (None, False),
    ],
)
def test_a_client_request_id_is_kept_only_when_short_and_plain(sent: str | None, kept: bool) -> None:
    got = logging_setup.request_id_from(sent)
    assert (got == sent) is kept
    assert 1 <= len(got) <= 128


def test_configure_text_leaves_logging_as_it_was_and_json_switches_the_root_handlers() -> None:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        root.handlers = [logging.StreamHandler(io.StringIO())]
        before = root.handlers[0].formatter
        logging_setup.configure("text")
        assert root.handlers[0].formatter is before and not root.handlers[0].filters
        logging_setup.configure("json")
        logging_setup.configure("json")  # idempotent
        assert len(root.handlers) == 1
        assert isinstance(root.handlers[0].formatter, JsonFormatter)
        assert sum(isinstance(f, ContextFilter) for f in root.handlers[0].filters) == 1
        root.handlers = []
        logging_setup.configure("json")
        assert len(root.handlers) == 1 and isinstance(root.handlers[0].formatter, JsonFormatter)
    finally:
        root.handlers = saved[0]
        root.setLevel(saved[1])


def test_gunicorn_logconfig_sends_each_line_once() -> None:
    config = logging_setup.gunicorn_logconfig()
    assert config["root"]["handlers"] == ["stderr"]
    for name in ("gunicorn.error", "gunicorn.access"):
        assert config["loggers"][name]["propagate"] is False
    assert config["formatters"]["json"]["()"] == "app.logging_setup.JsonFormatter"
