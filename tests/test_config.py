"""Settings from the environment: the recovery knobs and their errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from flask import Flask

from app.config import ConfigError, Settings

BASE = {"DATABASE_URL": "postgresql://db/x", "REDIS_URL": "redis://r/0", "SECRET_KEY": "s"}


def test_recovery_settings_default_to_the_documented_values() -> None:
    settings = Settings.from_env(BASE)
    assert (settings.heartbeat_timeout, settings.max_run_attempts, settings.reconcile_interval) == (30.0, 3, 5.0)


def test_recovery_settings_are_read_from_the_environment() -> None:
    settings = Settings.from_env(
        {**BASE, "BATCH_HEARTBEAT_TIMEOUT": "12.5", "BATCH_MAX_RUN_ATTEMPTS": "5", "RECONCILE_INTERVAL": "2"}
    )
    assert (settings.heartbeat_timeout, settings.max_run_attempts, settings.reconcile_interval) == (12.5, 5, 2.0)


@pytest.mark.parametrize(
    ("name", "value"),
    [("BATCH_HEARTBEAT_TIMEOUT", "soon"), ("BATCH_MAX_RUN_ATTEMPTS", "2.5"), ("RECONCILE_INTERVAL", "0")],
)
def test_a_bad_recovery_setting_is_refused_naming_its_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({**BASE, name: value})


def test_item_timeout_default_is_an_hour_unless_the_environment_says_otherwise() -> None:
    assert Settings.from_env(BASE).item_timeout_default == 3600.0
    assert Settings.from_env({**BASE, "ITEM_TIMEOUT_DEFAULT": "90.5"}).item_timeout_default == 90.5


@pytest.mark.parametrize("value", ["soon", "0", "-5", "nan", "inf"])
def test_a_bad_item_timeout_default_is_refused_naming_its_variable(value: str) -> None:
    with pytest.raises(ConfigError, match="ITEM_TIMEOUT_DEFAULT"):
        Settings.from_env({**BASE, "ITEM_TIMEOUT_DEFAULT": value})


def test_the_app_config_carries_the_item_timeout_default(app: Flask) -> None:
    assert app.config["ITEM_TIMEOUT_DEFAULT"] == app.config["SETTINGS"].item_timeout_default == 3600.0


def test_the_failure_policy_defaults_to_continue_and_never_pausing_and_refuses_a_bad_value() -> None:
    base = {"DATABASE_URL": "postgresql://x/y", "REDIS_URL": "redis://x", "SECRET_KEY": "k"}
    settings = Settings.from_env(base)
    assert (settings.queue_on_failure, settings.queue_pause_after_failures) == ("continue", 0)
    settings = Settings.from_env(base | {"QUEUE_ON_FAILURE": "pause", "QUEUE_PAUSE_AFTER_FAILURES": "3"})
    assert (settings.queue_on_failure, settings.queue_pause_after_failures) == ("pause", 3)
    with pytest.raises(ConfigError, match="QUEUE_ON_FAILURE"):
        Settings.from_env(base | {"QUEUE_ON_FAILURE": "stop"})
    with pytest.raises(ConfigError, match="QUEUE_PAUSE_AFTER_FAILURES"):
        Settings.from_env(base | {"QUEUE_PAUSE_AFTER_FAILURES": "-1"})


def test_a_deployment_without_secret_key_is_refused_naming_it(tmp_path: Path) -> None:
    env = {"DATABASE_URL": "postgresql://db/x", "REDIS_URL": "redis://r/0", "BATCHQ_VAR_DIR": str(tmp_path)}
    with pytest.raises(ConfigError, match="SECRET_KEY is not set"):
        Settings.from_env(env)
    assert list(tmp_path.iterdir()) == []  # and no key was generated meanwhile
    assert Settings.from_env(env | {"SECRET_KEY": "given"}).secret_key == "given"


def test_hardening_settings_default_to_the_documented_values() -> None:
    settings = Settings.from_env(BASE)
    assert (settings.preferred_url_scheme, settings.trusted_proxies) == ("http", 0)
    assert (settings.rate_limit_api, settings.rate_limit_login) == ("600/minute", "10/minute")
    changed = Settings.from_env(
        BASE
        | {"PREFERRED_URL_SCHEME": "HTTPS", "TRUSTED_PROXIES": "2", "RATE_LIMIT_API": "5/second;100/hour"}
        | {"RATE_LIMIT_LOGIN": "3 per minute"}
    )
    assert (changed.preferred_url_scheme, changed.trusted_proxies) == ("https", 2)
    assert (changed.rate_limit_api, changed.rate_limit_login) == ("5/second;100/hour", "3 per minute")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("RATE_LIMIT_API", "lots"),
        ("RATE_LIMIT_LOGIN", "10/fortnight"),
        ("TRUSTED_PROXIES", "one"),
        ("PREFERRED_URL_SCHEME", "ftp"),
    ],
)
def test_a_bad_hardening_setting_is_refused_naming_its_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({**BASE, name: value})


def test_log_format_is_text_unless_json_is_asked_for_and_refuses_anything_else() -> None:
    assert Settings.from_env(BASE).log_format == "text"
    assert Settings.from_env({**BASE, "LOG_FORMAT": "json"}).log_format == "json"
    assert Settings.from_env({**BASE, "LOG_FORMAT": " JSON "}).log_format == "json"
    with pytest.raises(ConfigError, match=r"LOG_FORMAT must be one of text, json, not 'logfmt'"):
        Settings.from_env({**BASE, "LOG_FORMAT": "logfmt"})


def test_retention_days_defaults_to_off_and_refuses_a_bad_value() -> None:
    base = {"DATABASE_URL": "postgresql://x/y", "REDIS_URL": "redis://x", "SECRET_KEY": "k"}
    assert Settings.from_env(base).retention_days == 0
    assert Settings.from_env(base | {"RETENTION_DAYS": ""}).retention_days == 0
    assert Settings.from_env(base | {"RETENTION_DAYS": "90"}).retention_days == 90
    for bad in ("-1", "90d", "1.5"):
        with pytest.raises(ConfigError, match="RETENTION_DAYS"):
            Settings.from_env(base | {"RETENTION_DAYS": bad})
