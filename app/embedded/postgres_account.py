"""The system account PostgreSQL runs as. PostgreSQL refuses to run as root, so when we are root
it runs as an unprivileged user, which must be able to reach and run the shipped binaries and own
its data; as anyone else it simply runs as ourselves."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

from app.embedded.reporting import EmbeddedError, notice

PG_SYSTEM_USER = "batchq-pg"


@dataclass(frozen=True)
class PostgresAccount:
    """The system account PostgreSQL runs as; `switch` is False when that is ourselves."""

    uid: int
    gid: int
    switch: bool


def account_for(pg_root: Path) -> PostgresAccount:
    """Return the account PostgreSQL of `pg_root` runs as, creating the system user if needed.

    If the data directory already belongs to a non-root user (created by `make run` as a normal
    user), keep running as that user; otherwise use (and create) the `batchq-pg` system user.
    """
    if os.geteuid() != 0:
        return PostgresAccount(os.geteuid(), os.getegid(), switch=False)
    data = pg_root / "data"
    if data.exists():
        st = data.stat()
        if st.st_uid != 0:
            return PostgresAccount(st.st_uid, st.st_gid, switch=True)
    try:
        entry = pwd.getpwnam(PG_SYSTEM_USER)
    except KeyError:
        entry = _create_system_user(PG_SYSTEM_USER)
    return PostgresAccount(entry.pw_uid, entry.pw_gid, switch=True)


def hand_over(account: PostgresAccount, *, var_dir: Path, pg_root: Path, bin_dir: Path) -> None:
    """Let a switched-to account run the binaries, reach `var_dir` and own `pg_root` with its data."""
    if not account.switch:
        return
    _grant_binaries(bin_dir, account)
    _grant_traverse(var_dir, account)
    if pg_root.stat().st_uid != account.uid:
        os.chown(pg_root, account.uid, account.gid)
    data = pg_root / "data"
    if data.exists() and data.stat().st_uid != account.uid:  # e.g. restored from a backup as root
        _chown_tree(data, account)


def file_owner(account: PostgresAccount) -> tuple[int, int] | None:
    """The (uid, gid) to give files we write into PGDATA, or None when PostgreSQL runs as ourselves."""
    return (account.uid, account.gid) if account.switch else None


def run_as(
    account: PostgresAccount, args: list[str], *, cwd: Path, timeout: float, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a PostgreSQL program as `account`, with a minimal environment and no terminal
    (`input`, when given, is its whole stdin)."""
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
        stdin=subprocess.DEVNULL if input is None else None,
        input=input,
        start_new_session=True,  # never in the terminal's process group: Ctrl-C is ours to handle
        user=account.uid if switch else None,
        group=account.gid if switch else None,
        extra_groups=[] if switch else None,
    )


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
            notice(f"created system user {name!r} to run PostgreSQL (it refuses to run as root)")
            return entry
        errors.append(f"{command[0]}: {result.stderr.strip()}")
    raise EmbeddedError(f"cannot create system user {name!r} for PostgreSQL: {'; '.join(errors) or 'no useradd'}")


def _grant_traverse(path: Path, account: PostgresAccount) -> None:
    """Let the PostgreSQL account reach `path`: add o+x (traverse, not list) where missing."""
    for directory in [path, *path.parents]:
        st = directory.stat()
        if st.st_uid == account.uid or st.st_mode & stat.S_IXOTH:
            continue
        directory.chmod(stat.S_IMODE(st.st_mode) | stat.S_IXOTH)
        notice(f"chmod o+x {directory} so PostgreSQL's user can reach its files")


def _grant_binaries(bin_dir: Path, account: PostgresAccount) -> None:
    """The PostgreSQL account must read and run the shipped binaries, libraries and share/."""
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
    notice(f"made {install} readable for PostgreSQL's user")


def _chown_tree(root: Path, account: PostgresAccount) -> None:
    os.chown(root, account.uid, account.gid)
    for parent, dirs, files in os.walk(root):
        for name in dirs + files:
            os.chown(os.path.join(parent, name), account.uid, account.gid, follow_symlinks=False)
