"""The embedded PostgreSQL and Redis servers: real servers, data kept across restarts, one set
per var directory however many callers race to start them, nothing left running."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis

from app.embedded import postgres_server, redis_server
from app.embedded.processes import pid_alive
from app.embedded.servers import (
    EmbeddedUrls,
    Started,
    ensure_running,
    read_discovery,
    start_servers,
    stop,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


def _pg(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def _assert_all_stopped(var_dir: Path, pids: set[int]) -> None:
    assert postgres_server.running(var_dir) is None
    assert redis_server.running(var_dir) is None
    assert not [pid for pid in pids if pid_alive(pid)]
    assert not (var_dir / "embedded.json").exists()


def _pids(var_dir: Path) -> set[int]:
    data = json.loads((var_dir / "embedded.json").read_text())
    return {data["postgres_pid"], data["redis_pid"]}


@pytest.fixture
def var_dir() -> Iterator[Path]:
    # Not under pytest's tmp_path: every pytest session resets its root to 0700,
    # which would cut PostgreSQL's unprivileged user off mid-test.
    root = Path(tempfile.mkdtemp(prefix="batchq-embedded-"))
    path = root / "var"
    yield path
    stop(path)  # whatever a failing test left behind
    assert postgres_server.running(path) is None
    assert redis_server.running(path) is None
    shutil.rmtree(root, ignore_errors=True)


def test_data_survives_restart_and_discovery_follows(var_dir: Path) -> None:
    assert read_discovery(var_dir) is None

    urls = ensure_running(var_dir)
    assert urls.database_url.startswith("postgresql+psycopg://postgres:")
    assert urls.database_url.endswith("/batchq")
    assert urls.redis_url.startswith("redis://:") and urls.redis_url.endswith("/0")
    assert read_discovery(var_dir) == urls
    first_pids = _pids(var_dir)
    assert set(json.loads((var_dir / "embedded.json").read_text())) == {
        "database_url",
        "redis_url",
        "postgres_pid",
        "redis_pid",
    }

    with psycopg.connect(_pg(urls.database_url), autocommit=True) as conn:
        conn.execute("CREATE TABLE kept (id int PRIMARY KEY, note text)")
        conn.execute("INSERT INTO kept VALUES (1, 'still here')")
    client = redis.Redis.from_url(urls.redis_url)
    client.set("kept", "still here")
    assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
    assert client.config_get("appendonly") == {"appendonly": "yes"}
    client.close()

    # A second call reuses the running servers.
    again = start_servers(var_dir)
    assert again.urls == urls
    assert not again.started_postgres and not again.started_redis
    assert _pids(var_dir) == first_pids

    stop(var_dir)
    _assert_all_stopped(var_dir, first_pids)
    assert read_discovery(var_dir) is None

    restarted = ensure_running(var_dir)
    assert restarted == urls  # same ports when still free: URLs stay valid across restarts
    with psycopg.connect(_pg(restarted.database_url)) as conn:
        assert conn.execute("SELECT note FROM kept WHERE id = 1").fetchone() == ("still here",)
    client = redis.Redis.from_url(restarted.redis_url)
    assert client.get("kept") == b"still here"
    client.close()
    assert read_discovery(var_dir) == restarted

    pids = _pids(var_dir)
    stop(var_dir)
    _assert_all_stopped(var_dir, pids)


def test_only_what_is_asked_for_starts(var_dir: Path) -> None:
    started = start_servers(var_dir, postgres=False, redis=True)
    assert started.urls == EmbeddedUrls(database_url="", redis_url=started.urls.redis_url)
    assert started.started_redis and not started.started_postgres
    assert postgres_server.running(var_dir) is None
    assert read_discovery(var_dir) == started.urls
    stop(var_dir)
    assert read_discovery(var_dir) is None


_RACER = """
import json, sys
from pathlib import Path
from app.embedded.servers import start_servers
started = start_servers(Path(sys.argv[1]))
print(json.dumps({"urls": [started.urls.database_url, started.urls.redis_url],
                  "started": [started.started_postgres, started.started_redis]}))
"""


def test_concurrent_callers_get_one_set_of_servers(var_dir: Path) -> None:
    # Two processes race on a fresh var dir (initdb included) ...
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", _RACER, str(var_dir)],
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    results = []
    for racer in racers:
        out, err = racer.communicate(timeout=120)
        assert racer.returncode == 0, err
        results.append(json.loads(out))
    assert results[0]["urls"] == results[1]["urls"]
    assert sorted(r["started"][0] for r in results) == [False, True]
    assert sorted(r["started"][1] for r in results) == [False, True]
    assert read_discovery(var_dir) == EmbeddedUrls(*results[0]["urls"])
    pids = _pids(var_dir)
    stop(var_dir)
    _assert_all_stopped(var_dir, pids)

    # ... and threads of one process race on a restart.
    found: list[Started] = []
    threads = [threading.Thread(target=lambda: found.append(start_servers(var_dir))) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert len(found) == 3
    assert len({f.urls for f in found}) == 1
    assert sum(f.started_postgres for f in found) == 1
    assert sum(f.started_redis for f in found) == 1
    pids = _pids(var_dir)
    stop(var_dir)
    _assert_all_stopped(var_dir, pids)
