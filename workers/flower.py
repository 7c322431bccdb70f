"""The Procfile's flower: Celery's Flower, started only behind authentication.

Flower open to whoever reaches its port shows every task's arguments and lets
anyone revoke tasks or shut workers down. So it starts only when credentials are
set: FLOWER_BASIC_AUTH (`user:password`, comma-separated for several), or one of
Flower's OAuth providers (FLOWER_AUTH_PROVIDER with FLOWER_AUTH, the emails
allowed). Flower reads these variables itself; they are never put on its
command line, where `ps` would show them. `make run` generates the basic-auth
pair into var/flower_auth.

    python -m workers.flower [FLOWER OPTIONS...]
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path


def refusal(env: Mapping[str, str]) -> str | None:
    """Why Flower must not start with this environment, or None when it may."""
    basic = env.get("FLOWER_BASIC_AUTH", "").strip()
    if basic:
        for pair in basic.split(","):
            user, colon, password = pair.strip().partition(":")
            if not (user and colon and password):
                return "FLOWER_BASIC_AUTH must be user:password (comma-separated for several), with neither part empty"
        return None
    if env.get("FLOWER_AUTH_PROVIDER") and env.get("FLOWER_AUTH"):
        return None
    return (
        "FLOWER_BASIC_AUTH is not set: Flower will not start without authentication. "
        "Set FLOWER_BASIC_AUTH=user:password (or FLOWER_AUTH_PROVIDER and FLOWER_AUTH for OAuth); "
        "`make run` generates one into var/flower_auth."
    )


def flower_metrics_dir() -> Path:
    """Flower's own Prometheus values: beside the host's, not among them.

    Flower has metrics of its own (flower_*), and it loads the project's app,
    which turns prometheus_client's multiprocess mode on (app/metrics): in the
    host's METRICS_DIR its gauges would show on the service's /metrics. A
    subdirectory is not read there (only the directory's own files are).
    """
    from app.config import metrics_dir

    return metrics_dir() / "flower"


def command(options: list[str]) -> list[str]:
    """The Flower command line, on the project's Celery app."""
    return [sys.executable, "-m", "celery", "-A", "workers.celery_app", "flower", *options]


def main(argv: list[str] | None = None) -> int:
    problem = refusal(os.environ)
    if problem:
        print(f"flower: {problem}", file=sys.stderr)
        return 2
    argv = command(sys.argv[1:] if argv is None else argv)
    os.environ["METRICS_DIR"] = str(flower_metrics_dir())
    os.execv(argv[0], argv)
    return 0  # pragma: no cover - execv does not return


if __name__ == "__main__":
    sys.exit(main())
