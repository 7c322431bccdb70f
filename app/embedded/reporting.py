"""How the embedded servers speak up: an exception when they cannot do their job, a line on
stderr when they change something on the machine to do it (a new user, a chmod, a fresh cluster)."""

from __future__ import annotations

import sys


class EmbeddedError(RuntimeError):
    """An embedded server could not be started or stopped; the message says which and why."""


def notice(message: str) -> None:
    """Tell the user what we changed on their machine, on stderr so command output stays clean."""
    print(f"app.embedded: {message}", file=sys.stderr, flush=True)
