"""embedded.json: written for what runs, removed when nothing does, ignored once its servers are gone."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

from app.embedded.discovery import EmbeddedUrls, RunningServer, read_discovery, write_discovery


def test_discovery_round_trips_a_live_server_and_is_removed_when_none_runs(tmp_path: Path) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        url = f"redis://127.0.0.1:{listener.getsockname()[1]}/0"
        urls = write_discovery(tmp_path, None, RunningServer(os.getpid(), url))
        assert urls == EmbeddedUrls(database_url="", redis_url=url)
        assert json.loads((tmp_path / "embedded.json").read_text()) == {
            "database_url": None,
            "redis_url": url,
            "postgres_pid": None,
            "redis_pid": os.getpid(),
        }
        assert read_discovery(tmp_path) == urls

    assert read_discovery(tmp_path) is None  # the port no longer answers
    write_discovery(tmp_path, None, None)
    assert not (tmp_path / "embedded.json").exists()


def test_discovery_ignores_a_dead_pid_and_a_bad_file(tmp_path: Path) -> None:
    (tmp_path / "embedded.json").write_text(
        json.dumps({"database_url": "postgresql+psycopg://postgres@127.0.0.1:1/batchq", "postgres_pid": 0})
    )
    assert read_discovery(tmp_path) is None
    (tmp_path / "embedded.json").write_text("[]")
    assert read_discovery(tmp_path) is None
    assert read_discovery(tmp_path / "missing") is None
