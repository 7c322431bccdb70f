"""The Flask application factory."""

from __future__ import annotations

from typing import Any

from flask import Flask

# metrics before anything else of the app: it chooses prometheus_client's multiprocess mode, which
# must be set before the library is first imported (app/metrics/__init__.py).
from app import logging_setup, metrics, request_ids, security  # noqa: F401
from app.config import Settings
from app.extensions import db, migrate

# The web app checks each pooled connection before use (pool_pre_ping), so that
# a request never fails because PostgreSQL restarted. Workers don't (see
# workers/celery_app.py).
ENGINE_OPTIONS = {"pool_pre_ping": True, "pool_size": 10, "max_overflow": 20}


def create_app(settings: Settings | None = None, **overrides: Any) -> Flask:
    """Build the app from settings (the environment by default)."""
    settings = settings or Settings.from_env()
    # Before the app's logger exists: Flask adds its own text handler only where none is set up.
    logging_setup.configure(settings.log_format)
    app = Flask(__name__, template_folder="../templates", static_folder="static")
    _configure(app, settings, overrides)
    _register_extensions(app, settings)
    _register_blueprints(app, settings)
    _register_commands(app)
    return app


def _configure(app: Flask, settings: Settings, overrides: dict[str, Any]) -> None:
    app.config.update(
        SETTINGS=settings,
        SECRET_KEY=settings.secret_key,
        SQLALCHEMY_DATABASE_URI=settings.database_url,
        SQLALCHEMY_ENGINE_OPTIONS=ENGINE_OPTIONS,
        REDIS_URL=settings.redis_url,
        CELERY_BROKER_URL=settings.broker_url,
        EVENTS_CHANNEL=settings.events_channel,
        HTTP_PROCESSOR_ALLOWED_HOSTS=settings.http_allowed_hosts,
        CALLBACK_ALLOWED_HOSTS=settings.callback_allowed_hosts,
        CALLBACK_TIMEOUT=settings.callback_timeout,
        CALLBACK_RETRY_BASE=settings.callback_retry_base,
        CALLBACK_RETRY_CAP=settings.callback_retry_cap,
        CALLBACK_RETRY_FOR=settings.callback_retry_for,
        BATCH_HEARTBEAT_TIMEOUT=settings.heartbeat_timeout,
        BATCH_MAX_RUN_ATTEMPTS=settings.max_run_attempts,
        RECONCILE_INTERVAL=settings.reconcile_interval,
        # Days a finished batch is kept before the repair rounds delete it (0: kept until purged by hand).
        RETENTION_DAYS=settings.retention_days,
        # Seconds an item may run when neither its batch nor its processor says otherwise.
        ITEM_TIMEOUT_DEFAULT=settings.item_timeout_default,
        # The failure policy the queue starts with; operators change it at run time (queue_state).
        QUEUE_ON_FAILURE=settings.queue_on_failure,
        QUEUE_PAUSE_AFTER_FAILURES=settings.queue_pause_after_failures,
        # Seconds a stopping run gets before the hard-stop fallback terminates it.
        STOP_GRACE_SECONDS=30.0,
        MAX_CONTENT_LENGTH=1024 * 1024,
    )
    app.config.update(overrides)
    request_ids.init_app(app)  # first: every other hook's lines carry the request id
    security.init_app(app, settings)
    app.json.sort_keys = False  # type: ignore[attr-defined]  # keep the contract's field order


def _register_extensions(app: Flask, settings: Settings) -> None:
    from app import processors
    from app.tasking import celery_init_app

    db.init_app(app)
    migrate.init_app(app, db, directory=str(app.root_path + "/../migrations"))
    celery_init_app(app)
    processors.load_modules(settings.processor_modules)


def _register_blueprints(app: Flask, settings: Settings) -> None:
    from app import live, rate_limits, views
    from app.api import bp as api_bp
    from app.metrics import http as http_metrics
    from app.metrics.view import bp as metrics_bp
    from app.views.auth import bp as auth_bp

    http_metrics.init_app(app)
    app.register_blueprint(api_bp)
    app.register_blueprint(metrics_bp)
    views.init_app(app)
    live.init_app(app)
    rate_limits.init_app(app, settings, api=api_bp, auth=auth_bp)


def _register_commands(app: Flask) -> None:
    from app.account_cli import token_cli, user_cli
    from app.batch_cli import batch_cli
    from app.cli import queue_cli
    from app.profile_cli import profiles_cli
    from app.retention_cli import batches_cli

    app.cli.add_command(token_cli)
    app.cli.add_command(user_cli)
    app.cli.add_command(queue_cli)
    app.cli.add_command(batch_cli)
    app.cli.add_command(profiles_cli)
    app.cli.add_command(batches_cli)
