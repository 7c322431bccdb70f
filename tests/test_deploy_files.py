"""deploy/: the systemd units start what the Procfile starts and stop it as it stops; nginx passes live streams on.

Like tests/test_docs.py, each check returns what is wrong and runs once on the
repository's files and once on a broken copy, so a check that stopped noticing
would fail too.
"""

from __future__ import annotations

import re
import runpy
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
from flask import Flask

import celeryconfig
from tests.test_docs import README, config_table

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
UNITS = {name: DEPLOY / "systemd" / f"batchq-{name}.service" for name in ("web", "worker", "beat")}
NGINX = DEPLOY / "nginx" / "batchq.conf"
ENV_EXAMPLE = DEPLOY / "batchq.env.example"
# Where the units expect the checkout (with its .venv): this repository stands in for it.
INSTALLED = "/opt/batchq"

Unit = dict[str, dict[str, list[str]]]


# systemd units


def parse_unit(text: str) -> Unit:
    """Sections of key -> values (a key may repeat, as Environment= does); no continuation lines."""
    unit: Unit = {}
    values: dict[str, list[str]] | None = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            values = unit.setdefault(line.strip("[]"), {})
            continue
        assert values is not None and "=" in line, f"not a unit line: {line!r}"
        key, value = line.split("=", 1)
        values.setdefault(key.strip(), []).append(value.strip())
    return unit


def one(unit: Unit, key: str) -> str:
    values = unit.get("Service", {}).get(key, [])
    return values[-1] if values else ""


def procfile() -> dict[str, list[str]]:
    lines = (ROOT / "Procfile").read_text().splitlines()
    return {name: shlex.split(command) for name, command in (line.split(": ", 1) for line in lines if line.strip())}


def _environment(unit: Unit) -> dict[str, str]:
    pairs = (value.split("=", 1) for value in unit.get("Service", {}).get("Environment", []))
    return {key: value for key, value in pairs}


def procfile_problems(units: dict[str, Unit], processes: dict[str, list[str]]) -> list[str]:
    """Each ExecStart runs the Procfile's process from the installed checkout, its variables set alike."""
    problems = []
    for name, unit in units.items():
        argv = shlex.split(one(unit, "ExecStart"))
        if not argv or not argv[0].startswith(f"{INSTALLED}/"):
            problems.append(f"{name}: ExecStart does not run a program of {INSTALLED}: {argv}")
            continue
        program = ROOT / argv[0].removeprefix(f"{INSTALLED}/")
        if not program.is_file() or not program.stat().st_mode & 0o111:
            problems.append(f"{name}: {argv[0]} is no executable of the checkout")
        expected = list(processes[name])
        env = dict(word.split("=", 1) for word in expected if re.match(r"^[A-Z_]+=", word))
        expected = expected[len(env) :]
        # The Procfile's restart wrapper: systemd's Restart= does its job under systemd.
        if expected[:3] == [".venv/bin/python", "-m", "workers.keep_running"]:
            expected = expected[3:]
        # ${NAME:-default} is shell; systemd expands ${NAME}, with the default set by Environment=.
        defaults = dict(re.findall(r"\$\{([A-Z_]+):-([^}]*)\}", " ".join(expected)))
        expected = [re.sub(r"\$\{([A-Z_]+):-[^}]*\}", r"${\1}", word) for word in expected]
        got = [argv[0].removeprefix(f"{INSTALLED}/"), *argv[1:]]
        if got != expected:
            problems.append(f"{name}: ExecStart runs {got}, the Procfile {expected}")
        for key, value in {**env, **defaults}.items():
            if _environment(unit).get(key) != value:
                problems.append(f"{name}: Environment= does not set {key}={value} as the Procfile does")
        if one(unit, "WorkingDirectory") != INSTALLED:
            problems.append(f"{name}: WorkingDirectory is not {INSTALLED} (the Procfile runs from the checkout)")
        if not one(unit, "EnvironmentFile"):
            problems.append(f"{name}: no EnvironmentFile")
    return problems


def _seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(ms|s|min|h)?", value.strip())
    assert match, f"not a duration: {value!r}"
    return float(match[1]) * {"ms": 0.001, "s": 1, None: 1, "min": 60, "h": 3600}[match[2]]


def stop_problems(units: dict[str, Unit], graceful_timeout: float, soft_shutdown: float) -> list[str]:
    """Stops as the processes expect them; a process that dies is started again."""
    problems = []
    for name, unit in units.items():
        if one(unit, "Restart") not in ("always", "on-failure"):
            problems.append(f"{name}: Restart= does not start a dead process again")
        if one(unit, "KillSignal") not in ("", "SIGTERM"):
            problems.append(f"{name}: KillSignal is {one(unit, 'KillSignal')}, not SIGTERM")
    web, worker = units["web"], units["worker"]
    # gunicorn's master stops its workers itself (each ends its live streams, then its requests).
    if one(web, "KillMode") != "mixed":
        problems.append("web: KillMode is not mixed (SIGTERM to gunicorn's master, SIGKILL to leftovers)")
    if _seconds(one(web, "TimeoutStopSec") or "90") <= graceful_timeout:
        problems.append(f"web: TimeoutStopSec is not longer than gunicorn's graceful_timeout ({graceful_timeout} s)")
    # The worker's pool process running a batch must get SIGTERM itself to hand the batch back
    # (workers/hand_back.py), as honcho sends it: to the whole group.
    if one(worker, "KillMode") not in ("", "control-group"):
        problems.append("worker: KillMode is not control-group (the run's pool process must get SIGTERM to hand back)")
    if _environment(worker).get("REMAP_SIGTERM") != "SIGQUIT":
        problems.append("worker: REMAP_SIGTERM=SIGQUIT is not set (a stop would wait for the whole batch)")
    if _seconds(one(worker, "TimeoutStopSec") or "90") < 3 * soft_shutdown:
        problems.append(f"worker: TimeoutStopSec leaves no room past the {soft_shutdown} s soft shutdown")
    return problems


def _units(texts: dict[str, str] | None = None) -> dict[str, Unit]:
    texts = texts or {name: path.read_text() for name, path in UNITS.items()}
    return {name: parse_unit(text) for name, text in texts.items()}


def _gunicorn_graceful_timeout() -> float:
    return float(runpy.run_path(str(ROOT / "gunicorn.conf.py"))["graceful_timeout"])


def test_deploy_units_run_the_procfiles_processes_from_the_installed_checkout() -> None:
    assert procfile_problems(_units(), procfile()) == []


def test_deploy_units_stop_as_the_processes_expect_and_restart_the_dead() -> None:
    problems = stop_problems(_units(), _gunicorn_graceful_timeout(), celeryconfig.worker_soft_shutdown_timeout)
    assert problems == []


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_deploy_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    # Installed where this checkout is, so that systemd finds the programs they name.
    for path in UNITS.values():
        (tmp_path / path.name).write_text(path.read_text().replace(INSTALLED, str(ROOT)))
    result = subprocess.run(
        ["systemd-analyze", "verify", *sorted(str(p) for p in tmp_path.glob("*.service"))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert not [line for line in result.stderr.splitlines() if "batchq-" in line], result.stderr


def test_deploy_unit_checks_catch_another_command_a_lost_variable_and_a_stop_that_cuts_the_hand_back() -> None:
    texts = {name: path.read_text() for name, path in UNITS.items()}
    changed = {
        **texts,
        "worker": texts["worker"]
        .replace("-Q batches,control", "-Q batches")
        .replace("Environment=REMAP_SIGTERM=SIGQUIT\n", "")
        .replace("KillMode=control-group", "KillMode=process"),
        "web": texts["web"].replace(".venv/bin/gunicorn", ".venv/bin/no-such-gunicorn").replace("=20", "=5"),
        "beat": texts["beat"].replace("Restart=always", "Restart=no"),
    }
    units = _units(changed)
    found = " | ".join(procfile_problems(units, procfile()) + stop_problems(units, 10.0, 3.0))
    for expected in (
        "worker: ExecStart runs",
        "worker: Environment= does not set REMAP_SIGTERM=SIGQUIT",
        "worker: KillMode is not control-group",
        "web: /opt/batchq/.venv/bin/no-such-gunicorn is no executable",
        "web: TimeoutStopSec is not longer",
        "beat: Restart=",
    ):
        assert expected in found, (expected, found)


# nginx


def parse_nginx(text: str) -> list[tuple[str, list[str], list]]:  # type: ignore[type-arg]
    """Directives as (name, arguments, children); a block's children are directives too."""
    tokens = re.findall(r'"[^"]*"|\'[^\']*\'|[{};]|[^\s{};]+', re.sub(r"#[^\n]*", "", text))
    stack: list[list] = [[]]  # type: ignore[type-arg]
    words: list[str] = []
    for token in tokens:
        if token == ";":
            stack[-1].append((words[0], words[1:], []))
            words = []
        elif token == "{":
            block: list = []  # type: ignore[type-arg]
            stack[-1].append((words[0], words[1:], block))
            stack.append(block)
            words = []
        elif token == "}":
            stack.pop()
        else:
            words.append(token.strip("\"'"))
    return stack[0]


def _find(directives: list, name: str) -> list[tuple[str, list[str], list]]:  # type: ignore[type-arg]
    return [d for d in directives if d[0] == name]


def _setting(scopes: list[list], name: str) -> list[str] | None:  # type: ignore[type-arg]
    """A directive's arguments as nginx applies them: the innermost scope that sets it."""
    for scope in reversed(scopes):
        found = _find(scope, name)
        if found:
            return found[-1][1]
    return None


def nginx_problems(text: str, stream_route: str) -> list[str]:
    """The live stream's location passes events on at once, uncompressed, for minutes, to several web hosts."""
    top = parse_nginx(text)
    upstreams = {args[0]: block for _, args, block in _find(top, "upstream")}
    problems = [
        f"upstream {name}: fewer than two servers" for name, b in upstreams.items() if len(_find(b, "server")) < 2
    ]
    servers = [block for _, _, block in _find(top, "server") if _find(block, "location")]
    if not servers:
        return [*problems, "no server with locations"]
    server = servers[0]
    streams = [block for _, args, block in _find(server, "location") if args[-1] == stream_route]
    if not streams:
        return [*problems, f"no location for the live stream {stream_route}"]
    scopes = [top, server, streams[0]]
    expected = {"proxy_buffering": ["off"], "gzip": ["off"], "proxy_http_version": ["1.1"], "proxy_cache": ["off"]}
    for name, value in expected.items():
        if _setting(scopes, name) != value:
            problems.append(f"{stream_route}: {name} is {_setting(scopes, name)}, not {' '.join(value)}")
    read_timeout = _setting(scopes, "proxy_read_timeout") or ["60s"]
    if _seconds(read_timeout[0]) < 300:  # a stream lives five minutes (LIVE_STREAM_SECONDS)
        problems.append(f"{stream_route}: proxy_read_timeout {read_timeout[0]} ends streams early")
    target = (_setting(scopes, "proxy_pass") or [""])[0].removeprefix("http://")
    if target not in upstreams:
        problems.append(f"{stream_route}: proxy_pass {target!r} is not an upstream of several web hosts")
    return problems


def _stream_route(app: Flask) -> str:
    (route,) = [rule.rule for rule in app.url_map.iter_rules() if rule.endpoint == "live.events"]
    return route


def test_deploy_nginx_passes_the_live_stream_on_unbuffered_uncompressed_and_long(app: Flask) -> None:
    assert nginx_problems(NGINX.read_text(), _stream_route(app)) == []


@pytest.mark.parametrize(
    ("old", "new", "problem"),
    [
        ("proxy_buffering off;", "proxy_buffering on;", "proxy_buffering is ['on']"),
        ("gzip off;", "", "gzip is None"),
        ("proxy_read_timeout 1h;", "proxy_read_timeout 60s;", "proxy_read_timeout 60s"),
        ("proxy_http_version 1.1;", "", "proxy_http_version is None"),
        ("location = /live/events", "location = /live/stream", "no location for the live stream"),
        ("    server 10.0.0.12:8000", "    #", "fewer than two servers"),
    ],
)
def test_deploy_nginx_check_catches_what_breaks_a_stream(app: Flask, old: str, new: str, problem: str) -> None:
    text = NGINX.read_text()
    assert old in text
    found = nginx_problems(text.replace(old, new, 1), _stream_route(app))
    assert any(problem in line for line in found), found


# The environment file


def _env_names(text: str) -> set[str]:
    return set(re.findall(r"^#?([A-Z][A-Z0-9_]*)=", text, re.MULTILINE))


def test_deploy_env_example_names_every_configuration_variable_and_no_other() -> None:
    table = set(config_table(README.read_text()))
    names = _env_names(ENV_EXAMPLE.read_text())
    assert (table - names, names - table) == (set(), set())
    # What a deployment must set is set, not left commented.
    required = {"DATABASE_URL", "REDIS_URL", "SECRET_KEY"}
    assert required <= set(re.findall(r"^([A-Z_]+)=", ENV_EXAMPLE.read_text(), re.MULTILINE))
