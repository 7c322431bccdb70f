"""The embedded PostgreSQL 16 (binaries from the `pgserver` wheel): create the cluster once,
start it on 127.0.0.1 with database `batchq`, stop it with its data flushed.

Every local account can reach 127.0.0.1, so the server is private by password: pg_hba.conf
allows only `scram-sha-256` logins over TCP on 127.0.0.1, and the superuser's password is
generated once into ``var_dir/postgres_password`` (0600); the URL carries it. A cluster made
by an earlier version with `trust` gets the password and the pg_hba.conf on its next start.

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
from app.embedded.postgres_account import PostgresAccount, account_for, file_owner, hand_over, run_as
from app.embedded.processes import (
    START_TIMEOUT,
    STOP_TIMEOUT,
    clear_stale_pid_file,
    pid_alive,
    signal_quietly,
    wait_or_force,
)
from app.embedded.reporting import EmbeddedError, notice
from app.embedded.secret_files import ensure_secret, new_server_password

DATABASE_NAME = "batchq"
PG_SUPERUSER = "postgres"
PASSWORD_FILE = "postgres_password"
_INCLUDE_LINE = "include_if_exists = 'batchq.conf'"
# The whole of pg_hba.conf, rewritten at each start: no `trust`, no `peer`, nothing but 127.0.0.1.
HBA = (
    "# Written by app.embedded at each start: password logins (scram-sha-256) on 127.0.0.1 only.\n"
    "local  all  all                 scram-sha-256\n"
    "host   all  all  127.0.0.1/32   scram-sha-256\n"
)


def database_url(port: int, password: str) -> str:
    """Return the URL of database `batchq` on the embedded server listening on `port`."""
    return f"postgresql+psycopg://{PG_SUPERUSER}:{password}@127.0.0.1:{port}/{DATABASE_NAME}"


def password(var_dir: Path) -> str:
    """The superuser's password, generated into var_dir/postgres_password the first time."""
    return ensure_secret(var_dir, PASSWORD_FILE, new_server_password)


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
        if not _hba_is_private(var_dir / "postgres" / "data"):
            _make_private_live(var_dir, live[1])  # started by an earlier version, with `trust`
        _ensure_database(live[1], password(var_dir))
        return False
    _start(var_dir)
    try:
        live = running(var_dir)
        if live is None:
            raise EmbeddedError(f"PostgreSQL did not come up:\n{log_tail(var_dir / 'postgres' / 'postgres.log')}")
        _ensure_database(live[1], password(var_dir))
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
    owner = file_owner(account)
    password_is_new = not (var_dir / PASSWORD_FILE).exists()
    secret = password(var_dir)
    if not (data / "PG_VERSION").exists():
        if data.exists() and any(data.iterdir()):
            raise EmbeddedError(f"{data} exists but holds no PostgreSQL cluster (no PG_VERSION); move it away")
        if data.exists():
            data.rmdir()
        _initdb(pg_root, bin_dir, account, secret)
        password_is_new = False

    # A postmaster.pid whose server is gone (killed, machine rebooted): PostgreSQL would refuse to
    # start if its pid was reused by an unrelated process, so drop it ourselves. A postmaster of
    # ours that holds it but no longer answers gets an immediate shutdown.
    data_arg = str(data).encode()
    clear_stale_pid_file(
        data / "postmaster.pid",
        lambda args: args[0].endswith(b"postgres") and data_arg in args,
        signal.SIGQUIT,
    )
    # A cluster of an earlier version (`trust`), or a password file someone removed: the server
    # must know the password before it listens, so set it in single-user mode (no connections).
    if password_is_new or not _hba_is_private(data):
        _set_password_offline(data, bin_dir, account, secret)
    if not _hba_is_private(data):
        atomic_write(data / "pg_hba.conf", HBA, mode=0o600, owner=owner)

    log = pg_root / "postgres.log"

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


def _initdb(pg_root: Path, bin_dir: Path, account: PostgresAccount, secret: str) -> None:
    """Create PGDATA atomically: initdb into a scratch dir, then rename (an interrupted initdb
    leaves nothing that looks like a cluster). The cluster is born with its password."""
    scratch = pg_root / "data.initdb"
    if scratch.exists():
        shutil.rmtree(scratch)
    # initdb runs as PostgreSQL's account, which cannot read var/: hand it a copy it owns, briefly.
    pwfile = pg_root / ".initdb-password"
    atomic_write(pwfile, secret + "\n", mode=0o600, owner=file_owner(account))
    started = time.monotonic()
    try:
        result = run_as(
            account,
            [
                str(bin_dir / "initdb"),
                "-D",
                str(scratch),
                "-U",
                PG_SUPERUSER,
                f"--pwfile={pwfile}",
                "--auth=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
                "--no-instructions",
            ],
            cwd=pg_root,
            timeout=300,
        )
    finally:
        pwfile.unlink(missing_ok=True)
    if result.returncode != 0:
        shutil.rmtree(scratch, ignore_errors=True)
        raise EmbeddedError(f"initdb failed ({result.returncode}):\n{result.stdout}{result.stderr}")
    conf = scratch / "postgresql.conf"
    with conf.open("a") as handle:
        handle.write(f"\n# Port and listen address of the embedded server, rewritten at each start\n{_INCLUDE_LINE}\n")
    atomic_write(scratch / "pg_hba.conf", HBA, mode=0o600, owner=file_owner(account))
    data = pg_root / "data"
    scratch.replace(data)
    notice(f"initialised PostgreSQL data in {data} ({time.monotonic() - started:.1f}s)")


def _hba_is_private(data: Path) -> bool:
    try:
        return (data / "pg_hba.conf").read_text() == HBA
    except OSError:
        return False


def _set_password_offline(data: Path, bin_dir: Path, account: PostgresAccount, secret: str) -> None:
    """Set the superuser's password in single-user mode, before the server accepts anyone."""
    statement = f"ALTER ROLE {PG_SUPERUSER} PASSWORD '{secret}';\n"
    result = run_as(
        account,
        [str(bin_dir / "postgres"), "--single", "-D", str(data), "-c", "password_encryption=scram-sha-256", "postgres"],
        cwd=data.parent,
        timeout=START_TIMEOUT,
        input=statement,
    )
    if result.returncode != 0 or "ERROR" in result.stderr:
        output = f"{result.stdout}{result.stderr}".replace(secret, "***")
        raise EmbeddedError(f"could not set PostgreSQL's password in {data}:\n{output}")
    notice(f"set a password on the PostgreSQL cluster in {data} (kept in {PASSWORD_FILE})")


def _make_private_live(var_dir: Path, port: int) -> None:
    """Give a server still running with an earlier version's `trust` its password and pg_hba.conf."""
    import psycopg
    from psycopg import sql

    data = var_dir / "postgres" / "data"
    account = account_for(var_dir / "postgres")
    conninfo = f"host=127.0.0.1 port={port} user={PG_SUPERUSER} dbname=postgres connect_timeout=10"
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(
            sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(PG_SUPERUSER), sql.Literal(password(var_dir)))
        )
        atomic_write(data / "pg_hba.conf", HBA, mode=0o600, owner=file_owner(account))
        conn.execute("SELECT pg_reload_conf()")
    notice(f"set a password on the running PostgreSQL of {data} (kept in {PASSWORD_FILE})")


def _ensure_database(port: int, secret: str) -> None:
    # Imported here so that reading embedded.json (the app's config does, on every load) needs no psycopg.
    import psycopg

    conninfo = psycopg.conninfo.make_conninfo(
        host="127.0.0.1", port=port, user=PG_SUPERUSER, password=secret, dbname="postgres", connect_timeout=10
    )
    with psycopg.connect(conninfo, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE_NAME,)).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{DATABASE_NAME}"')
