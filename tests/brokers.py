"""The tests' Celery broker: Redis (the default), or RabbitMQ when TEST_BROKER_URL names one.

With TEST_BROKER_URL=amqp://..., the session's Celery app and the fault tests'
workers send and consume there, while Redis still keeps results and carries the
live updates (as CELERY_BROKER_URL does in production). On Redis every session
keeps its queues apart with a key prefix; RabbitMQ has none, so each session
(and each fault-test worker) gets a virtual host of its own, made and removed
with rabbitmqctl (which needs the rights of root or of the server's own user).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import pytest

BROKER_ENV = "TEST_BROKER_URL"


def given_broker_url() -> str | None:
    """The broker the tests were asked to use instead of Redis, if any."""
    return os.environ.get(BROKER_ENV) or None


def is_amqp(url: str | None) -> bool:
    return bool(url) and urlsplit(url or "").scheme in ("amqp", "amqps", "pyamqp")


def amqp_session() -> bool:
    """Whether this test session's broker is RabbitMQ."""
    return is_amqp(given_broker_url())


def with_vhost(url: str, vhost: str) -> str:
    """The same broker URL on another virtual host."""
    return urlunsplit(urlsplit(url)._replace(path="/" + quote(vhost, safe="")))


def _rabbitmqctl(*args: str) -> None:
    done = subprocess.run(["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        pytest.fail(f"rabbitmqctl {' '.join(args)} failed (root or the server's user may run it): {done.stderr}")


@contextlib.contextmanager
def private_vhost(url: str, vhost: str) -> Iterator[str]:
    """A virtual host of our own on the broker of `url` (its user may use it), removed afterwards."""
    if shutil.which("rabbitmqctl") is None:
        pytest.fail(f"{BROKER_ENV} is an AMQP URL, but rabbitmqctl (to make the session's virtual host) is missing")
    user = urlsplit(url).username or "guest"
    _rabbitmqctl("add_vhost", vhost)
    try:
        _rabbitmqctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*")
        yield with_vhost(url, vhost)
    finally:
        _rabbitmqctl("delete_vhost", vhost)


@contextlib.contextmanager
def session_broker(redis_url: str, tag: str) -> Iterator[str]:
    """The broker URL for a session or a worker of its own: Redis as given, or a private RabbitMQ vhost."""
    given = given_broker_url()
    if not is_amqp(given):
        yield given or redis_url
        return
    assert given is not None
    with private_vhost(given, f"batchq-{tag}") as url:
        yield url


# The server script itself: the packaged /usr/sbin wrapper switches to the rabbitmq user, who can't write our files.
_SERVER_SCRIPTS = ("/usr/lib/rabbitmq/bin/rabbitmq-server", "rabbitmq-server")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _answers(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


@contextlib.contextmanager
def own_rabbitmq(root: Path, consumer_timeout_ms: int) -> Iterator[str]:
    """A RabbitMQ node of the test's own, on free ports under `root`, with this consumer_timeout; its AMQP URL.

    Servers before 3.12 have no per-queue `x-consumer-timeout`, so a short timeout
    needs a node configured with it. It checks the timeout on every channel tick
    (a minute by default): the tick is shortened too, or nothing times out in time.
    """
    script = next((path for path in map(shutil.which, _SERVER_SCRIPTS) if path), None)
    if script is None:
        message = "rabbitmq-server is not installed: no RabbitMQ node of the test's own"
        # .ci/run's RabbitMQ pass sets it: there a missing server fails the run instead of skipping the test.
        if os.environ.get("REQUIRE_RABBITMQ_NODE") == "1":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    port, dist_port = _free_port(), _free_port()
    (root / "rabbitmq.conf").write_text(
        f"listeners.tcp.default = 127.0.0.1:{port}\nconsumer_timeout = {consumer_timeout_ms}\nloopback_users = none\n"
    )
    (root / "advanced.config").write_text("[{rabbit, [{channel_tick_interval, 200}]}].\n")
    (root / "enabled_plugins").write_text("[].\n")
    env = {
        **os.environ,
        "HOME": str(root),  # its own Erlang cookie
        "RABBITMQ_NODENAME": f"batchq-{root.name}@localhost",
        "RABBITMQ_DIST_PORT": str(dist_port),
        "RABBITMQ_CONFIG_FILE": str(root / "rabbitmq.conf"),
        "RABBITMQ_ADVANCED_CONFIG_FILE": str(root / "advanced.config"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(root / "enabled_plugins"),
        "RABBITMQ_MNESIA_BASE": str(root / "mnesia"),
        "RABBITMQ_LOG_BASE": str(root / "log"),
        "RABBITMQ_PID_FILE": str(root / "rabbitmq.pid"),
    }
    with (root / "server.log").open("wb") as out:
        server = subprocess.Popen([script], env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not _answers(port):
            assert server.poll() is None, (root / "server.log").read_text(errors="replace")[-3000:]
            assert time.monotonic() < deadline, "the RabbitMQ node did not answer within 60 s"
            time.sleep(0.1)  # polling the port until it answers
        yield f"amqp://guest:guest@127.0.0.1:{port}//"
    finally:
        os.killpg(server.pid, signal.SIGKILL)  # the node and its epmd-less Erlang children
        server.wait(timeout=30)
