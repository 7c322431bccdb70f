"""The 127.0.0.1 ports the servers listen on: the same one across restarts while it stays free,
so URLs written down elsewhere keep working, and another one when someone took it."""

from __future__ import annotations

import socket
from collections.abc import Callable

# Tries in all: one on the preferred port, the others only after losing a port to someone else.
_TRIES = 3


def port_open(port: int, timeout: float = 0.5) -> bool:
    """True if something accepts TCP connections on 127.0.0.1:`port`."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False


def start_on_free_port(
    preferred: int | None, start: Callable[[int], str | None], port_taken: tuple[str, ...]
) -> str | None:
    """Call `start(port)` on `preferred` if it is free, else on any free port; None once it succeeds.

    `start` returns None on success or its error text. A port can be taken between our check and
    the server's bind: when the error contains one of `port_taken`, try again on a fresh port.
    Returns the last error when every try failed.
    """
    error = None
    for _attempt in range(_TRIES):
        error = start(_pick_port(preferred))
        if error is None or not any(sign in error for sign in port_taken):
            return error
        preferred = None
    return error


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
