"""The embedded servers are private: every local account reaches 127.0.0.1, so both require the
password generated into var/ (0600), which only the discovered URLs carry; a var/ of an earlier
version (`trust`, no requirepass) is made private on its next start, running or not."""

from __future__ import annotations

import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest
import redis

from app.config import Settings
from app.embedded import postgres_server, redis_server
from app.embedded.servers import EmbeddedUrls, ensure_running, read_discovery, redacted, stop

REPO_ROOT = Path(__file__).resolve().parents[2]
TRUST_HBA = "local all all trust\nhost all all 127.0.0.1/32 trust\n"


@pytest.fixture
def var_dir() -> Iterator[Path]:
    # Not under pytest's tmp_path: every pytest session resets its root to 0700,
    # which would cut PostgreSQL's unprivileged user off mid-test.
    root = Path(tempfile.mkdtemp(prefix="batchq-private-"))
    path = root / "var"
    yield path
    stop(path)
    shutil.rmtree(root, ignore_errors=True)


def _pg(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def _with_password(url: str, password: str | None) -> str:
    parts = urlsplit(url)
    user = f"{parts.username or ''}:{password}@" if password else f"{parts.username}@" if parts.username else ""
    return parts._replace(netloc=f"{user}{parts.hostname}:{parts.port}").geturl()


def _without_password(url: str) -> str:
    return _with_password(url, None)


def _assert_private(urls: EmbeddedUrls) -> None:
    """The URLs get in; the same URLs without their password, or with another one, do not."""
    with psycopg.connect(_pg(urls.database_url), connect_timeout=10) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    for url in (_without_password(urls.database_url), _with_password(urls.database_url, "wrong")):
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(_pg(url), connect_timeout=10).close()

    client = redis.Redis.from_url(urls.redis_url)
    assert client.ping()
    client.close()
    for url in (_without_password(urls.redis_url), _with_password(urls.redis_url, "wrong")):
        other = redis.Redis.from_url(url)
        with pytest.raises(redis.exceptions.AuthenticationError):
            other.set("taken", "over")
        other.close()


def test_both_servers_refuse_a_connection_without_their_password(var_dir: Path) -> None:
    urls = ensure_running(var_dir)
    _assert_private(urls)
    hba = (var_dir / "postgres" / "data" / "pg_hba.conf").read_text()
    assert "trust" not in hba and "scram-sha-256" in hba


def test_secret_files_are_readable_by_the_owner_only(var_dir: Path) -> None:
    ensure_running(var_dir)
    for path in (
        var_dir / "postgres_password",
        var_dir / "redis_password",
        var_dir / "embedded.json",
        var_dir / "redis" / "redis.conf",
        var_dir / "postgres" / "data" / "pg_hba.conf",
    ):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert not (var_dir / "postgres" / ".initdb-password").exists()
    for directory in (var_dir / "postgres", var_dir / "redis"):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700, directory


def test_flask_settings_discover_the_servers_with_their_credentials(var_dir: Path) -> None:
    urls = ensure_running(var_dir)
    settings = Settings.from_env({"BATCHQ_VAR_DIR": str(var_dir)})
    assert settings.database_url == urls.database_url
    assert settings.redis_url == settings.broker_url == urls.redis_url
    assert read_discovery(var_dir) == urls
    _assert_private(EmbeddedUrls(settings.database_url, settings.redis_url))


def test_status_and_up_print_no_password(var_dir: Path) -> None:
    urls = ensure_running(var_dir)
    secrets = [(var_dir / name).read_text().strip() for name in ("postgres_password", "redis_password")]
    env = {"BATCHQ_VAR_DIR": str(var_dir), "PATH": "/usr/bin:/bin"}
    for command in ("status", "up"):
        result = subprocess.run(
            [sys.executable, "-m", "app.embedded", command],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        assert f":{urlsplit(urls.redis_url).port}/0" in result.stdout
        assert not [secret for secret in secrets if secret in result.stdout + result.stderr]
    assert redacted(urls.redis_url) == f"redis://:***@127.0.0.1:{urlsplit(urls.redis_url).port}/0"


def test_a_stopped_var_dir_of_an_earlier_version_is_made_private_on_start(var_dir: Path) -> None:
    urls = ensure_running(var_dir)
    with psycopg.connect(_pg(urls.database_url), autocommit=True) as conn:
        conn.execute("CREATE TABLE kept (note text)")
        conn.execute("INSERT INTO kept VALUES ('still here')")
    stop(var_dir)
    # What an earlier version left: pg_hba with trust, no password files, redis.conf without requirepass.
    (var_dir / "postgres" / "data" / "pg_hba.conf").write_text(TRUST_HBA)
    (var_dir / "postgres_password").unlink()
    (var_dir / "redis_password").unlink()
    conf = var_dir / "redis" / "redis.conf"
    conf.write_text("".join(line for line in conf.read_text().splitlines(True) if "requirepass" not in line))

    upgraded = ensure_running(var_dir)
    assert upgraded != urls  # new passwords, same ports
    assert [urlsplit(u).port for u in (upgraded.database_url, upgraded.redis_url)] == [
        urlsplit(u).port for u in (urls.database_url, urls.redis_url)
    ]
    _assert_private(upgraded)
    with psycopg.connect(_pg(upgraded.database_url)) as conn:
        assert conn.execute("SELECT note FROM kept").fetchone() == ("still here",)


def test_servers_still_running_from_an_earlier_version_are_made_private(var_dir: Path) -> None:
    urls = ensure_running(var_dir)
    # Turn the running servers into what an earlier version ran: trust, and no requirepass.
    with psycopg.connect(_pg(urls.database_url), autocommit=True) as conn:
        (var_dir / "postgres" / "data" / "pg_hba.conf").write_text(TRUST_HBA)
        conn.execute("SELECT pg_reload_conf()")
    client = redis.Redis.from_url(urls.redis_url)
    client.config_set("requirepass", "")
    client.close()
    open_redis = redis.Redis.from_url(_without_password(urls.redis_url))
    assert open_redis.ping()
    open_redis.close()
    pids = (postgres_server.running(var_dir), redis_server.running(var_dir))

    assert ensure_running(var_dir) == urls
    assert (postgres_server.running(var_dir), redis_server.running(var_dir)) == pids  # not restarted
    _assert_private(urls)
