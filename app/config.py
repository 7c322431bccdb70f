"""The service's settings, read once from the environment.

Within app/, only this module and app/embedded (the servers `make run` starts,
Flower's credentials) read os.environ. Outside it, gunicorn.conf.py reads the
web server's own variables (BIND, PORT, WEB_*), bench/ the servers it measures
and CHROMIUM_PATH, and the tests their own (TEST_DATABASE_URL and TEST_REDIS_URL
among them).
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from app.embedded.secret_files import ensure_secret, new_secret_key

PROJECT_ROOT = Path(__file__).resolve().parent.parent

_N = TypeVar("_N", int, float)


def normalize_database_url(url: str) -> str:
    """Accept postgres://, postgresql:// and SQLAlchemy's form; always drive psycopg 3."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def _positive(env: dict[str, str], name: str, default: _N, kind: Callable[[str], _N]) -> _N:
    """A positive number from the environment, or the default; a bad value names its variable."""
    raw = env.get(name)
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        value = None
    # nan and inf read as floats; neither is a usable number of seconds.
    if value is None or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{name} must be a positive {kind.__name__}, not {raw!r}")
    return value


# What the queue does when a batch fails: go on with the next, or pause (QUEUE_ON_FAILURE).
FAILURE_POLICIES = ("continue", "pause")


def _choice(name: str, raw: str | None, choices: tuple[str, ...]) -> str:
    """One of `choices` (unset: the first); another value names its variable."""
    value = (raw or choices[0]).strip().lower()
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, not {raw!r}")
    return value


# How every process writes its log lines (LOG_FORMAT): as today, or one JSON object per line.
LOG_FORMATS = ("text", "json")


def log_format(env: dict[str, str] | os._Environ[str]) -> str:
    """LOG_FORMAT, checked: gunicorn.conf.py reads it too, before any app exists."""
    return _choice("LOG_FORMAT", env.get("LOG_FORMAT"), LOG_FORMATS)


def _count(name: str, raw: str | None) -> int:
    """A whole number >= 0 (unset: 0); a bad value names its variable."""
    if not raw:
        return 0
    if not raw.strip().isdigit():
        raise ConfigError(f"{name} must be a whole number >= 0, not {raw!r}")
    return int(raw)


def _rate_limit(name: str, raw: str | None, default: str) -> str:
    """A Flask-Limiter string such as `600/minute` (unset: the default); a bad one names its variable."""
    from limits import parse_many

    value = (raw or default).strip()
    try:
        parse_many(value)
    except ValueError:
        raise ConfigError(f"{name} must be a rate limit such as {default!r}, not {raw!r}") from None
    return value


def _secret_key(env: dict[str, str], vdir: Path) -> str:
    """SECRET_KEY, or a key generated under var/ for a checkout that runs on its embedded servers.

    A DATABASE_URL says this is a deployment: there a generated key would differ
    between machines and vanish with the checkout, signing everyone out, so it is
    an error instead (`make run` hands its own kept key to what it starts).
    """
    key = env.get("SECRET_KEY")
    if key:
        return key
    if env.get("DATABASE_URL"):
        raise ConfigError(
            "SECRET_KEY is not set: with DATABASE_URL set (a deployment) the session signing key must be given, "
            "the same for every process (generate one with: python -c 'import secrets; print(secrets.token_hex(32))')"
        )
    return ensure_secret(vdir, "secret_key", new_secret_key)


def _split_list(value: str | None) -> tuple[str, ...]:
    return tuple(part.strip() for part in (value or "").split(",") if part.strip())


def var_dir(environ: dict[str, str] | os._Environ[str] | None = None) -> Path:
    """Where embedded servers and generated secrets live."""
    env = os.environ if environ is None else environ
    return Path(env.get("BATCHQ_VAR_DIR") or PROJECT_ROOT / "var")


def metrics_dir(environ: dict[str, str] | os._Environ[str] | None = None) -> Path:
    """Where every process of this host keeps its Prometheus values (METRICS_DIR).

    The default needs no ./var/: a directory of this user and this checkout under
    the system's temporary directory, so the web, the worker and beat of one
    checkout share it, and two checkouts (or users) on one machine do not.
    """
    env = os.environ if environ is None else environ
    given = env.get("METRICS_DIR")
    if given:
        return Path(given)
    checkout = hashlib.sha256(str(PROJECT_ROOT).encode()).hexdigest()[:10]
    return Path(tempfile.gettempdir()) / f"batchq-metrics-{os.getuid()}-{checkout}"


def _networks(name: str, raw: str | None, default: str) -> tuple[str, ...]:
    """Comma-separated addresses or CIDRs (unset: the default); a bad one names its variable."""
    values = _split_list(default if raw is None else raw)
    for value in values:
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError:
            raise ConfigError(f"{name} must list IP addresses or CIDRs, not {value!r}") from None
    return values


def _port(name: str, raw: str | None) -> int | None:
    """A TCP port (unset: None); a bad one names its variable."""
    if not raw:
        return None
    if not raw.strip().isdigit() or not 0 < int(raw) < 65536:
        raise ConfigError(f"{name} must be a port number from 1 to 65535, not {raw!r}")
    return int(raw)


def _embedded_urls(vdir: Path) -> tuple[str | None, str | None]:
    """Ask the embedded servers started by `make run` where they listen, if they run."""
    try:
        from app.embedded.servers import read_discovery
    except ImportError:  # pragma: no cover - the embedded module is part of the project
        return None, None
    found = read_discovery(vdir)
    if found is None:
        return None, None
    return found.database_url, found.redis_url


class ConfigError(RuntimeError):
    """A required setting is missing; raised at start so misconfiguration fails fast."""


@dataclass(frozen=True)
class Settings:
    """Every setting the service reads, typed, with the contract's defaults."""

    database_url: str
    redis_url: str
    broker_url: str
    secret_key: str
    processor_modules: tuple[str, ...] = ()
    http_allowed_hosts: tuple[str, ...] = ()
    heartbeat_timeout: float = 30.0
    max_run_attempts: int = 3
    reconcile_interval: float = 5.0
    item_timeout_default: float = 3600.0
    queue_on_failure: str = "continue"
    queue_pause_after_failures: int = 0
    events_channel: str = "batchq:events"
    # https: cookies are Secure and HSTS is sent on every response, not only on HTTPS requests.
    preferred_url_scheme: str = "http"
    # Proxy hops in front of the web server whose X-Forwarded-For/-Proto are believed (0: none).
    trusted_proxies: int = 0
    rate_limit_api: str = "600/minute"
    rate_limit_login: str = "10/minute"
    # Hosts completion webhooks may call, under the http processor's rules (app/services/outbound.py).
    callback_allowed_hosts: tuple[str, ...] = ()
    # Seconds one webhook POST may take, connect to last byte.
    callback_timeout: float = 10.0
    # Retries of a webhook wait base, 2 x base, 4 x base ... seconds (jittered), at most `cap`, for `retry_for`
    # seconds after the first attempt. Not read from the environment: the contract fixes the 24 hours, and
    # the tests shorten the rest to see a failed delivery retried within seconds.
    callback_retry_base: float = 10.0
    callback_retry_cap: float = 3600.0
    callback_retry_for: float = 86400.0
    log_format: str = "text"
    # Addresses (or CIDRs) that may read /metrics without a token.
    metrics_allowed_hosts: tuple[str, ...] = ("127.0.0.1",)
    # A worker's own /metrics port (its host's values without the database's gauges); None: not served.
    worker_metrics_port: int | None = None
    # Finished batches older than this many days are deleted by the repair rounds (app/services/retention.py);
    # 0: never (only `flask batches purge` deletes them).
    retention_days: int = 0

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        """Build settings from the environment, falling back to the embedded servers."""
        env = dict(os.environ if environ is None else environ)
        vdir = var_dir(env)
        database_url = env.get("DATABASE_URL")
        redis_url = env.get("REDIS_URL")
        if not database_url or not redis_url:
            found_db, found_redis = _embedded_urls(vdir)
            database_url = database_url or found_db
            redis_url = redis_url or found_redis
        if not database_url:
            raise ConfigError("DATABASE_URL is not set and no embedded server runs (start one with `make run`)")
        if not redis_url:
            raise ConfigError("REDIS_URL is not set and no embedded server runs (start one with `make run`)")
        return cls(
            database_url=normalize_database_url(database_url),
            redis_url=redis_url,
            broker_url=env.get("CELERY_BROKER_URL") or redis_url,
            secret_key=_secret_key(env, vdir),
            processor_modules=_split_list(env.get("PROCESSOR_MODULES")),
            http_allowed_hosts=_split_list(env.get("HTTP_PROCESSOR_ALLOWED_HOSTS")),
            heartbeat_timeout=_positive(env, "BATCH_HEARTBEAT_TIMEOUT", 30.0, float),
            max_run_attempts=_positive(env, "BATCH_MAX_RUN_ATTEMPTS", 3, int),
            reconcile_interval=_positive(env, "RECONCILE_INTERVAL", 5.0, float),
            item_timeout_default=_positive(env, "ITEM_TIMEOUT_DEFAULT", 3600.0, float),
            queue_on_failure=_choice("QUEUE_ON_FAILURE", env.get("QUEUE_ON_FAILURE"), FAILURE_POLICIES),
            queue_pause_after_failures=_count("QUEUE_PAUSE_AFTER_FAILURES", env.get("QUEUE_PAUSE_AFTER_FAILURES")),
            events_channel=env.get("BATCHQ_EVENTS_CHANNEL") or "batchq:events",
            preferred_url_scheme=_choice("PREFERRED_URL_SCHEME", env.get("PREFERRED_URL_SCHEME"), ("http", "https")),
            trusted_proxies=_count("TRUSTED_PROXIES", env.get("TRUSTED_PROXIES")),
            rate_limit_api=_rate_limit("RATE_LIMIT_API", env.get("RATE_LIMIT_API"), "600/minute"),
            rate_limit_login=_rate_limit("RATE_LIMIT_LOGIN", env.get("RATE_LIMIT_LOGIN"), "10/minute"),
            callback_allowed_hosts=_split_list(env.get("CALLBACK_ALLOWED_HOSTS")),
            callback_timeout=_positive(env, "CALLBACK_TIMEOUT", 10.0, float),
            log_format=log_format(env),
            metrics_allowed_hosts=_networks("METRICS_ALLOWED_HOSTS", env.get("METRICS_ALLOWED_HOSTS"), "127.0.0.1"),
            worker_metrics_port=_port("WORKER_METRICS_PORT", env.get("WORKER_METRICS_PORT")),
            retention_days=_count("RETENTION_DAYS", env.get("RETENTION_DAYS")),
        )
