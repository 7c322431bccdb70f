"""X-Request-ID on every response, and the request's log context.

The client's own id is kept when it is sane (short, plain characters), else a
fresh one replaces it; the id goes into every line the request logs and onto
every task it sends (app/tasking.py), and back to the client in the answer.
"""

from __future__ import annotations

from contextlib import suppress

from flask import Flask, Response, g, request

from app import logging_setup

HEADER = "X-Request-ID"
ACTOR_ENVIRON = logging_setup.ACTOR_ENVIRON


def init_app(app: Flask) -> None:
    """Give every request an id and a log context; registered before the other hooks so that it runs first."""
    app.before_request(_enter)
    app.after_request(_answer)
    app.teardown_request(_leave)


def _enter() -> None:
    g.request_id = logging_setup.request_id_from(request.headers.get(HEADER))
    g.log_context = logging_setup.enter(request_id=g.request_id)


def _answer(response: Response) -> Response:
    # A request refused before _enter ran (another hook raised first) still gets an id.
    response.headers[HEADER] = g.get("request_id") or logging_setup.new_request_id()
    # gunicorn writes its access line after the request's context is gone: it reads the actor from here.
    request.environ[ACTOR_ENVIRON] = logging_setup.current().actor
    return response


def _leave(_error: BaseException | None) -> None:
    token = g.pop("log_context", None)
    # Entered in another context (a streamed answer's generator): nothing to restore here.
    if token is not None:
        with suppress(ValueError):
            logging_setup.leave(token)
