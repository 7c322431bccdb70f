"""The embedded PostgreSQL 16 (binaries from the `pgserver` wheel): create the cluster once,
start it on 127.0.0.1 with database `batchq`, stop it with its data flushed.

Layout under ``var_dir/postgres``: ``data/`` (PGDATA, owned by the account PostgreSQL runs as,
see `postgres_account`) and ``postgres.log``.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from pathlib import Path

from app.embedded.files import atomic_write, configured_port, log_tail, package_dir
from app.embedded.ports import port_open, start_on_free_port
from app.embedded.postgres_account import PostgresAccount, account_for, hand_over, run_as
from app.embedded.processes import (
    START_TIMEOUT,
    STOP_TIMEOUT,
    clear_stale_pid_file,
    pid_alive,
    signal_quietly,
    wait_or_force,
)
from app.embedded.reporting import EmbeddedError, notice

DATABASE_NAME = "batchq"
PG_SUPERUSER = "postgres"
_INCLUDE_LINE = "include_if_exists = 'batchq.conf'"


def database_url(port: int) -> str:
    """Return the URL of database `batchq` on the embedded server listening on `port`."""
    return f"postgresql+psycopg://{PG_SUPERUSER}@127.0.0.1:{port}/{DATABASE_NAME}"


def running(var_dir: Path) -> tuple[int, int] | None:
    """(pid, port) of the live postmaster of var_dir, from postmaster.pid, or None."""
    try:
        lines = (var_dir / "postgres" / "data" / "postmaster.pid").read_text().splitlines()
        pid, port = int(lines[0]), int(lines[3])
    except (OSError, ValueError, IndexError):
        return None
    if not pid_alive(pid) or not port_open(port):
        return None
    return pid, port


def ensure_started(var_dir: Path) -> bool:
    """Make sure the postmaster of var_dir runs and database `batchq` exists; True if we started it."""
    live = running(var_dir)
    if live is not None:
        _ensure_database(live[1])
        return False
    _start(var_dir)
    try:
        live = running(var_dir)
        if live is None:
            raise EmbeddedError(f"PostgreSQL did not come up:\n{log_tail(var_dir / 'postgres' / 'postgres.log')}")
        _ensure_database(live[1])
    except BaseException:
        stop(var_dir)  # started here, so the caller cannot know to stop it
        raise
    return True


def stop(var_dir: Path) -> None:
    """Stop the postmaster of var_dir (fast shutdown: sessions end, data is flushed), if it runs."""
    pg_root = var_dir / "postgres"
    live = running(var_dir)
    if live is None:
        return
    pid = live[0]
    try:
        account = account_for(pg_root)
        pg_ctl = str(_bin_dir() / "pg_ctl")
        timeout = str(int(STOP_TIMEOUT))
        result = run_as(
            account,
            [pg_ctl, "-D", str(pg_root / "data"), "-m", "fast", "-w", "-t", timeout, "-s", "stop"],
            cwd=pg_root,
            timeout=STOP_TIMEOUT + 10,
        )
        stopped = result.returncode == 0
    except (OSError, subprocess.SubprocessError, EmbeddedError):
        stopped = False
    if not stopped and pid_alive(pid):
        signal_quietly(pid, signal.SIGINT)  # fast shutdown, as pg_ctl -m fast would ask
    wait_or_force(pid, STOP_TIMEOUT, signal.SIGQUIT, grace=10)


def _bin_dir() -> Path:
    pkg = package_dir("pgserver")
    if pkg is not None and (pkg / "pginstall" / "bin" / "postgres").is_file():
        return pkg / "pginstall" / "bin"
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    raise EmbeddedError("no PostgreSQL binaries: install requirements.txt (pgserver) or set DATABASE_URL")


def _start(var_dir: Path) -> None:
    """Start the postmaster of var_dir, creating its cluster first when there is none."""
    pg_root = var_dir / "postgres"
    data = pg_root / "data"
    bin_dir = _bin_dir()
    pg_root.mkdir(parents=True, exist_ok=True)
    account = account_for(pg_root)
    hand_over(account, var_dir=var_dir, pg_root=pg_root, bin_dir=bin_dir)
    pg_root.chmod(0o700)
    if not (data / "PG_VERSION").exists():
        if data.exists() and any(data.iterdir()):
            raise EmbeddedError(f"{data} exists but holds no PostgreSQL cluster (no PG_VERSION); move it away")
        if data.exists():
            data.rmdir()
        _initdb(pg_root, bin_dir, account)

    # A postmaster.pid whose server is gone (killed, machine rebooted): PostgreSQL would refuse to
    # start if its pid was reused by an unrelated process, so drop it ourselves. A postmaster of
    # ours that holds it but no longer answers gets an immediate shutdown.
    data_arg = str(data).encode()
    clear_stale_pid_file(
        data / "postmaster.pid",
        lambda args: args[0].endswith(b"postgres") and data_arg in args,
        signal.SIGQUIT,
    )

    log = pg_root / "postgres.log"
    owner = (account.uid, account.gid) if account.switch else None

    def start_on(port: int) -> str | None:
        conf = (
            "# Written by app.embedded at each start; edit postgresql.conf for your own settings.\n"
            "listen_addresses = '127.0.0.1'\n"
            f"port = {port}\n"
            "unix_socket_directories = ''  # TCP only: no socket path length limit, no /tmp clash\n"
            "max_connections = 200\n"
        )
        atomic_write(data / "batchq.conf", conf, mode=0o600, owner=owner)
        timeout = str(int(START_TIMEOUT))
        result = run_as(
            account,
            [str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", timeout, "-s", "start"],
            cwd=pg_root,
            timeout=START_TIMEOUT + 10,
        )
        if result.returncode == 0:
            return None
        return f"{result.stdout}{result.stderr}\n{log_tail(log)}"

    preferred = configured_port(data / "batchq.conf", r"^port\s*=\s*(\d+)")
    error = start_on_free_port(preferred, start_on, port_taken=("already in use", "could not bind"))
    if error is not None:
        raise EmbeddedError(f"PostgreSQL failed to start (see {log}):\n{error}")


def _initdb(pg_root: Path, bin_dir: Path, account: PostgresAccount) -> None:
    """Create PGDATA atomically: initdb into a scratch dir, then rename (an interrupted initdb
    leaves nothing that looks like a cluster)."""
    scratch = pg_root / "data.initdb"
    if scratch.exists():
        shutil.rmtree(scratch)
    started = time.monotonic()
    result = run_as(
        account,
        [
            str(bin_dir / "initdb"),
            "-D",
            str(scratch),
            "-U",
            PG_SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
            "--no-instructions",
        ],
        cwd=pg_root,
        timeout=300,
    )
    if result.returncode != 0:
        shutil.rmtree(scratch, ignore_errors=True)
        raise EmbeddedError(f"initdb failed ({result.returncode}):\n{result.stdout}{result.stderr}")
    conf = scratch / "postgresql.conf"
    with conf.open("a") as handle:
        handle.write(f"\n# Port and listen address of the embedded server, rewritten at each start\n{_INCLUDE_LINE}\n")
    data = pg_root / "data"
    scratch.replace(data)
    notice(f"initialised PostgreSQL data in {data} ({time.monotonic() - started:.1f}s)")


def _ensure_database(port: int) -> None:
    # Imported here so that reading embedded.json (the app's config does, on every load) needs no psycopg.
    import psycopg

    conninfo = f"host=127.0.0.1 port={port} user={PG_SUPERUSER} dbname=postgres connect_timeout=10"
    with psycopg.connect(conninfo, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE_NAME,)).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{DATABASE_NAME}"')
