"""Fixtures: real PostgreSQL, real Redis, a real Celery worker.

With TEST_DATABASE_URL / TEST_REDIS_URL unset, embedded servers are started
under a temporary directory (the fresh-machine path). Each test session gets a
database of its own on that server, migrated with the project's migrations,
and a Redis key and channel prefix of its own, so parallel runs don't meet.
TEST_BROKER_URL=amqp://... makes RabbitMQ the Celery broker (tests/brokers.py).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from flask import Flask
from flask.testing import FlaskClient
from marshmallow import Schema, fields
from sqlalchemy.exc import OperationalError

from app import create_app
from app.config import Settings, normalize_database_url
from app.embedded import redis_server
from app.errors import Conflict
from app.extensions import db
from app.models import Role
from app.processors import ItemFailed, ProfileData, RunContext, registry
from app.services import accounts
from bench.invariants import queue_violations
from tests.brokers import amqp_session, session_broker

SESSION_TAG = f"t{os.getpid()}_{uuid.uuid4().hex[:6]}"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Skip the tests that need Redis as the broker (they stop and start it) when it is RabbitMQ."""
    if not amqp_session():
        return
    for item in items:
        marker = item.get_closest_marker("redis_broker")
        if marker is not None:
            reason = f"needs Redis as the Celery broker: {marker.kwargs.get('reason', 'see the test')}"
            item.add_marker(pytest.mark.skip(reason=reason))


# The hosts the session lets the http processor call.
HTTP_ALLOWED_HOSTS = ("127.0.0.1", "localhost")
TABLES = "batch_logs, batch_items, batches, profiles, api_tokens, users"


def _server_urls(tmp_root: Path) -> Iterator[tuple[str, str]]:
    database_url = os.environ.get("TEST_DATABASE_URL")
    redis_url = os.environ.get("TEST_REDIS_URL")
    if database_url and redis_url:
        yield database_url, redis_url
        return
    from app.embedded.servers import ensure_running, stop

    var = tmp_root / "var"
    urls = ensure_running(var)
    try:
        yield database_url or urls.database_url, redis_url or urls.redis_url
    finally:
        stop(var)


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(normalize_database_url(url))
    return urlunsplit(parts._replace(path=f"/{name}"))


def _admin(url: str, sql: str) -> None:
    plain = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(plain, autocommit=True) as connection:
        connection.execute(sql)


@pytest.fixture(scope="session")
def servers() -> Iterator[tuple[str, str]]:
    """URLs of a PostgreSQL database made for this session and of Redis."""
    # Not under pytest's tmp_path: every pytest session resets that root to 0700,
    # which would cut the embedded PostgreSQL's unprivileged user off.
    root = Path(tempfile.mkdtemp(prefix="batchq-tests-"))
    urls = _server_urls(root)
    server_url, redis_url = next(urls)
    name = f"batchq_{SESSION_TAG}"
    _admin(server_url, f'CREATE DATABASE "{name}"')
    try:
        yield _with_database(server_url, name), redis_url
    finally:
        _admin(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        next(urls, None)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def broker_url(servers: tuple[str, str]) -> Iterator[str]:
    """The session's Celery broker: Redis, or a virtual host of its own on TEST_BROKER_URL's RabbitMQ."""
    with session_broker(servers[1], SESSION_TAG) as url:
        yield url


@pytest.fixture(scope="session")
def settings(servers: tuple[str, str], broker_url: str) -> Settings:
    database_url, redis_url = servers
    return Settings(
        database_url=normalize_database_url(database_url),
        redis_url=redis_url,
        broker_url=broker_url,
        secret_key="test-secret",
        events_channel=f"batchq-{SESSION_TAG}:events",
        http_allowed_hosts=HTTP_ALLOWED_HOSTS,
        heartbeat_timeout=30.0,
    )


@pytest.fixture(autouse=True)
def _session_celery_stays_the_default(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail the test that left another Celery app as the process default.

    create_app makes its own Celery app the default, and shared tasks follow the
    default: the session's worker then ran tasks in that other app's context (its
    settings, not the ones a test had patched), and tests far down the suite failed.
    Build extra apps with `another_app`, which gives the default back.
    """
    yield
    if "app" in request.fixturenames:
        from celery import _state  # the default that threads without a current app of their own (the worker's) use

        session_celery = request.getfixturevalue("app").extensions["celery"]
        assert _state.default_app is session_celery, "another app's Celery is the default now"


@pytest.fixture(scope="session")
def app(settings: Settings) -> Iterator[Flask]:
    """The app, on a freshly migrated database."""
    from flask_migrate import upgrade

    # Rate limits off for the session's app: its tests share one token and one address. The limits'
    # own tests (tests/test_rate_limits.py) build apps of their own with them on.
    app = create_app(
        settings,
        TESTING=True,
        WTF_CSRF_ENABLED=False,
        RATELIMIT_ENABLED=False,
        RATELIMIT_KEY_PREFIX=f"batchq-{SESSION_TAG}:limits",
    )
    celery = app.extensions["celery"]
    # Keys and queues of this session only: a stack running beside the tests
    # on the same Redis must not take our tasks, nor we its.
    prefix = f"batchq-{SESSION_TAG}:"
    celery.conf.broker_transport_options = {
        **celery.conf.broker_transport_options,
        "global_keyprefix": prefix,
    }
    celery.conf.result_backend_transport_options = {
        **celery.conf.result_backend_transport_options,
        "global_keyprefix": prefix,
    }
    with app.app_context():
        upgrade(directory=str(Path(app.root_path).parent / "migrations"))
    yield app
    with app.app_context():
        db.engine.dispose()


@pytest.fixture(scope="session")
def celery_worker(app: Flask) -> Iterator[Any]:
    """A real Celery worker in this process, consuming the batch and control queues."""
    from celery.contrib.testing.worker import start_worker

    import tasks.batches
    import tasks.queue  # noqa: F401  (registers queue.*)
    import workers.signals  # (the promotion chain)
    import workers.task_logs  # noqa: F401  (each task's log context)
    from app.services.liveness import ProcessRecord
    from workers.liveness import ProcessLife

    celery = app.extensions["celery"]
    celery.loader.import_module("celery.contrib.testing.tasks")
    sent_tasks.install(celery)
    with start_worker(
        celery,
        pool="threads",
        concurrency=4,
        perform_ping_check=False,
        queues=["batches", "control"],
        shutdown_timeout=20,
    ) as worker:
        # Celery's test worker sends no celeryd_init nor worker_ready: name it and
        # record its heartbeats by hand.
        from app.services import liveness

        liveness.this_worker = worker.hostname
        # No repair timer here: tests run their repair rounds when they mean to.
        record = ProcessRecord(
            name=worker.hostname,
            kind="worker",
            host=socket.gethostname(),
            pid=os.getpid(),
            pool="thread",
            concurrency=4,
            queues=("batches", "control"),
        )
        worker.liveness = ProcessLife(app, record, repair_every=None).start()
        _session_worker.append(worker)
        try:
            yield worker
        finally:
            _session_worker.clear()
            worker.liveness.stop()


# The session's worker, once a test has started it: tests of liveness silence its heartbeat.
_session_worker: list[Any] = []


@pytest.fixture
def without_workers(app: Flask, clean: None) -> Iterator[None]:
    """No worker is alive for the test: the session worker's heartbeat (if it runs) stops, records go."""
    from workers.liveness import ProcessLife

    silenced = list(_session_worker)
    for worker in silenced:
        worker.liveness.stop()
    with app.app_context():
        db.session.execute(db.text("DELETE FROM service_processes"))
        db.session.commit()
    try:
        yield
    finally:
        for worker in silenced:
            worker.liveness = ProcessLife(app, worker.liveness.record, repair_every=None).start()


@pytest.fixture
def live_worker(app: Flask, without_workers: None) -> Iterator[Any]:
    """A worker's heartbeat (no worker behind it: nothing consumes runs), kept fresh until `stop()`."""
    from app.services.liveness import ProcessRecord
    from workers.liveness import ProcessLife

    record = ProcessRecord(name="celery@stand-in", kind="worker", host="stand-in", pid=os.getpid(), pool="prefork")
    life = ProcessLife(app, record, repair_every=None).start()
    try:
        yield life
    finally:
        life.stop()


@pytest.fixture
def clean(app: Flask) -> Iterator[None]:
    """Empty tables and an un-paused queue before the test; committed for real.

    An earlier test may have left its batch to the session's worker (a page
    test that creates one, say): that run is stopped and waited for first, or
    its writes would race the TRUNCATE.
    """
    reset_tables(app)
    yield


def reset_tables(app: Flask) -> None:
    """What `clean` does, for fixtures of a wider scope."""
    # User ids start over: a session checked for the last test's user must not pass for this one's.
    app.extensions["refetch_sessions"].clear()
    with app.app_context():
        _settle_runs()
        for attempt in range(3):
            try:
                db.session.execute(db.text(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE"))
                db.session.execute(
                    db.text(
                        "UPDATE queue_state SET paused = false, paused_by = NULL, paused_at = NULL, repaired_at = NULL,"
                        " paused_reason = NULL, draining = false, drain_by = NULL, drain_at = NULL,"
                        " on_failure = NULL, pause_after_failures = NULL, streak_from = NULL"
                    )
                )
                db.session.commit()
                break
            except OperationalError as exc:  # a run that began after the wait
                db.session.rollback()
                if not isinstance(exc.orig, psycopg.errors.DeadlockDetected) or attempt == 2:
                    raise
        db.session.remove()


def _settle_runs() -> None:
    """Stop the running batch, if any, and wait until no run holds a lease and every task sent has run.

    A promotion chained onto an earlier test's last run would otherwise run in
    the next test, and start a batch that test means to keep queued.
    """
    from app.services import queue_manager

    running = queue_manager.get_running_batch()
    if running is not None and running.status == "in_progress":
        # One that ends between the read and the stop leaves nothing to stop.
        with contextlib.suppress(Conflict):
            queue_manager.stop(running.id, "teardown")
    wait_for(lambda: not held_leases(), timeout=15)
    sent_tasks.wait_until_run(timeout=30)


@pytest.fixture
def app_ctx(app: Flask, clean: None) -> Iterator[Flask]:
    with app.app_context():
        yield app
        db.session.rollback()
        db.session.remove()


def make_token(app: Flask, name: str, role: Role = Role.OPERATOR) -> str:
    """A token of that role, committed."""
    with app.app_context():
        value = accounts.create_token(name, role)
        db.session.remove()
    return value


@pytest.fixture
def token(app: Flask, clean: None) -> str:
    """An operator's token: what the service's default token may do (the failure policy needs admin_api)."""
    return make_token(app, "tests")


class ApiClient:
    """The test client with a Bearer token and JSON helpers."""

    def __init__(self, client: FlaskClient, token: str) -> None:
        self.client = client
        self.headers = {"Authorization": f"Bearer {token}"}

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.client.get(f"/api/v1{path}", headers=self.headers | kwargs.pop("headers", {}), **kwargs)

    def post(self, path: str, json: Any = None, **kwargs: Any) -> Any:
        return self.client.post(f"/api/v1{path}", json=json, headers=self.headers | kwargs.pop("headers", {}), **kwargs)

    def put(self, path: str, json: Any = None, **kwargs: Any) -> Any:
        return self.client.put(f"/api/v1{path}", json=json, headers=self.headers | kwargs.pop("headers", {}), **kwargs)

    def profiles(self, count: int, prefix: str = "p") -> list[int]:
        """Create `count` profiles and return their ids."""
        ids = []
        for index in range(count):
            response = self.post("/profiles", {"name": f"{prefix}-{index}", "attributes": {"n": index}})
            assert response.status_code == 201, response.get_json()
            ids.append(response.get_json()["id"])
        return ids

    def batch(self, profile_ids: list[int], processor: str = "noop", name: str = "b", **parameters: Any) -> dict:
        response = self.post(
            "/batches",
            {"name": name, "profile_ids": profile_ids, "processor": processor, "parameters": parameters},
        )
        assert response.status_code == 201, response.get_json()
        return response.get_json()

    def batch_of(self, batch_id: int) -> dict[str, Any]:
        """The batch as GET /batches/<id> shows it."""
        return self.get(f"/batches/{batch_id}").get_json()

    def items_of(self, batch_id: int) -> list[dict[str, Any]]:
        """The batch's items (up to 500), in processing order."""
        return self.get(f"/batches/{batch_id}/items?per_page=500").get_json()["items"]

    def log_of(self, batch_id: int) -> list[str]:
        """The batch's log messages (up to 500), oldest first."""
        return [line["message"] for line in self.get(f"/batches/{batch_id}/logs?per_page=500").get_json()["items"]]

    def queued_order(self) -> list[int]:
        """Ids of the queued batches, by position, as the API reports them."""
        queued = self.get("/batches?status=queued&per_page=500").get_json()["items"]
        return [b["id"] for b in sorted(queued, key=lambda b: b["queue_position"])]


PASSWORD = "correct horse"


def make_user(app: Flask, name: str, role: Role) -> str:
    """A user of that role who signs in with PASSWORD, committed."""
    with app.app_context():
        accounts.create_user(name, PASSWORD, role)
        db.session.remove()
    return name


@pytest.fixture
def user(app: Flask, clean: None) -> str:
    """A user who can sign in to every page and use every control: alice, an admin, with PASSWORD."""
    return make_user(app, "alice", Role.ADMIN)


def assert_queue_consistent(app: Flask) -> None:
    """Assert the queue rules hold in the database right now."""
    with app.app_context():
        assert queue_violations() == []


@pytest.fixture
def api(app: Flask, token: str) -> ApiClient:
    return ApiClient(app.test_client(), token)


@pytest.fixture
def admin_api(app: Flask, clean: None) -> ApiClient:
    """A client with an admin's token: settings such as the failure policy."""
    return ApiClient(app.test_client(), make_token(app, "admin", Role.ADMIN))


class SentTasks:
    """The tasks this session's Celery app sent, and how many of them the in-process worker has run.

    The positive signal behind "nothing happened" checks: once every promotion
    sent so far has run (the one a run's end chains included), whatever it could
    have changed has changed, and the check that follows can fail.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sent: Counter[str] = Counter()
        self._ran: Counter[str] = Counter()
        self._names: dict[str, str] = {}
        self._installed = False

    def install(self, celery: Any) -> None:
        """Count every send of `celery` (tasks' own sends go through it too) and every task run in this process."""
        if self._installed:
            return
        from celery.signals import task_postrun

        send_task = celery.send_task

        def counted(name: str, *args: Any, **kwargs: Any) -> Any:
            result = send_task(name, *args, **kwargs)
            with self._lock:
                self._sent[result.id] += 1
                self._names[result.id] = name
            return result

        celery.send_task = counted
        task_postrun.connect(self._postrun, weak=False)
        self._installed = True

    def _postrun(self, task_id: str | None = None, **_: Any) -> None:
        if task_id is not None:
            with self._lock:
                self._ran[task_id] += 1

    def pending(self, *names: str) -> list[str]:
        """The sends (of these task names, or any) that have not run yet, as name[id]."""
        with self._lock:
            return [
                f"{self._names[task_id]}[{task_id}]"
                for task_id, count in self._sent.items()
                if self._ran[task_id] < count and (not names or self._names[task_id] in names)
            ]

    def wait_until_run(self, *names: str, timeout: float = 15.0) -> None:
        """Wait until every task sent so far (of these names, or any) has run; a no-op without a worker.

        A run's task chains its promotion (workers/signals.py) before its own
        postrun is counted, so once nothing at all is pending, the promotions
        of every run that has ended have run too.
        """
        if not self._installed:
            return
        try:
            wait_for(lambda: not self.pending(*names), timeout=timeout)
        except AssertionError:
            raise AssertionError(f"still not run after {timeout}s: {self.pending(*names)}") from None


# Installed on the session's Celery app when the in-process worker starts.
sent_tasks = SentTasks()


class Gate:
    """A processor that holds items until the test opens the gate, whatever stop or time limit comes.

    A run under it lasts exactly as long as the test needs, however slow the
    machine: no sleep has to outlast the test's next few requests. It holds
    every item, or only those of the profiles named in `hold`.
    """

    name = "gate"
    description = "Holds each item (or those of the profiles in hold) until the test opens the gate; then succeeds."

    class schema(Schema):  # noqa: N801  (the Processor protocol names it `schema`)
        hold = fields.List(fields.String(), load_default=None)

    def __init__(self) -> None:
        self.opened = threading.Event()

    def open(self) -> None:
        self.opened.set()

    def process(self, profile: ProfileData, parameters: dict[str, Any], ctx: RunContext) -> Any:
        hold = parameters.get("hold")
        if (hold is None or profile.name in hold) and not self.opened.wait(120):
            raise ItemFailed("the test never opened the gate")
        return {"profile": profile.name}


@pytest.fixture
def gate() -> Iterator[Gate]:
    """Register the gate processor for this test (the in-process worker shares the registry); opened at the end.

    Registered on a monkeypatch of its own: a test's `monkeypatch.undo()` leaves it in place.
    """
    processor = Gate()
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(registry._processors, Gate.name, processor)
        try:
            yield processor
        finally:
            processor.open()


def wait_for(condition: Callable[[], Any], timeout: float = 15.0, interval: float = 0.02) -> Any:
    """Observe until the condition holds (for test assertions only, never for correctness)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


def run_in_threads(count: int, target: Callable[[int], Any]) -> list[Any]:
    """Run target(i) in `count` threads released at the same moment; return results in order."""
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count
    errors: list[BaseException] = []

    def runner(index: int) -> None:
        try:
            barrier.wait()
            results[index] = target(index)
        except BaseException as exc:  # noqa: BLE001  (surfaced below)
            errors.append(exc)

    threads = [threading.Thread(target=runner, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results


def held_leases() -> list[int]:
    """Ids of the batches whose run lease some connection holds right now."""
    from app.services.leases import LEASE_CLASS

    ids = (
        db.session.execute(
            db.text(
                "SELECT l.objid FROM pg_locks l JOIN pg_database d ON d.oid = l.database"
                " WHERE l.locktype = 'advisory' AND l.granted AND d.datname = current_database()"
                " AND l.classid = :cls AND l.objsubid = 2"
            ),
            {"cls": LEASE_CLASS},
        )
        .scalars()
        .all()
    )
    db.session.rollback()
    return [int(i) for i in ids]


@pytest.fixture
def settled(app: Flask, clean: None) -> Iterator[None]:
    """Leave no run behind for the next test (batch ids restart at 1, and so do lease keys).

    At teardown a batch still running is stopped, then the test waits until no
    run holds a lease, so a straggler can't turn the next test's batch 1 into a
    "duplicate".
    """
    yield
    with app.app_context():
        _settle_runs()
        db.session.remove()


def insert_profiles(count: int, prefix: str = "p") -> list[int]:
    """Insert `count` profiles named PREFIX-1.. in the current app context; return their ids."""
    ids = db.session.scalars(
        db.text(
            "INSERT INTO profiles (name, attributes, created_at) SELECT :prefix || '-' || g, '{}', now()"
            " FROM generate_series(1, :n) g RETURNING id"
        ),
        {"n": count, "prefix": prefix},
    ).all()
    db.session.commit()
    return list(ids)


@pytest.fixture
def another_app(app: Flask, settings: Settings) -> Iterator[Callable[..., Flask]]:
    """Build more apps on the session's servers, with settings changed (`another_app(rate_limit_api=...)`).

    Each is what another web process would run; config overrides go as upper-case keywords.
    """
    from dataclasses import replace

    made: list[Flask] = []

    def build(**changes: Any) -> Flask:
        overrides = {key: value for key, value in changes.items() if key.isupper()}
        fields = {key: value for key, value in changes.items() if not key.isupper()}
        extra = create_app(replace(settings, **fields), TESTING=True, WTF_CSRF_ENABLED=False, **overrides)
        # create_app makes its Celery app the process default; give it back to the session's app.
        app.extensions["celery"].set_default()
        made.append(extra)
        return extra

    yield build
    for extra in made:
        with extra.app_context():
            db.engine.dispose()


class RedisServer:
    """A redis-server of the test's own (the embedded one, on a free port), to stop and start again."""

    def __init__(self, var_dir: Path) -> None:
        self.var_dir = var_dir
        redis_server.ensure_started(var_dir)
        found = redis_server.running(var_dir)
        assert found is not None
        self.url = redis_server.redis_url(found[1], redis_server.password(var_dir))

    def stop(self) -> None:
        redis_server.stop(self.var_dir)  # SIGTERM: it writes its append-only file and exits, like SHUTDOWN

    def start(self) -> None:
        redis_server.ensure_started(self.var_dir)  # same port, same data
        found = redis_server.running(self.var_dir)
        assert found is not None
        assert self.url == redis_server.redis_url(found[1], redis_server.password(self.var_dir))


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis of the test's own: processes started as a deployment starts them use unprefixed queues,
    which on the session's Redis would meet another session's (or another test's leftover) messages."""
    server = RedisServer(tmp_path / "own-redis")
    try:
        yield server
    finally:
        redis_server.stop(server.var_dir)
