"""`make bench`'s one table: every benchmark's headline figures beside their baselines and targets.

Reads the run's results file (bench/results.py), prints the table, and with
`--save` writes it to bench/results/ as JSON (a file per run, and latest.json)
with the machine it ran on, and puts the table into docs/benchmarks.md between
its markers, so the docs show the latest run. Never fails on a figure: a
missed target is a row that says so.

    python -m bench.report RESULTS.jsonl [--save]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import psycopg
import redis

from bench.results import Figure, read
from bench.setup import server_urls

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "bench" / "results"
DOCS = ROOT / "docs" / "benchmarks.md"
START, END = "<!-- bench-table:start -->", "<!-- bench-table:end -->"


def _number(value: float | None, unit: str = "") -> str:
    if value is None:
        return ""
    text = f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.2f}".rstrip("0").rstrip(".")
    return f"{text} {unit}".strip()


def _met(figure: Figure) -> str:
    return {True: "yes", False: "**no**", None: ""}[figure.met]


def table(figures: list[Figure]) -> str:
    """The figures as one Markdown table (it reads as plain text in a terminal too)."""
    lines = [
        "| benchmark | measure | value | baseline (same run) | ratio | target | met |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for f in figures:
        baseline = f"{_number(f.baseline, f.unit)} ({f.baseline_measure})" if f.baseline is not None else ""
        ratio = f"{f.ratio:.2f}x" if f.ratio is not None else ""
        row = [f.bench, f.measure, _number(f.value, f.unit), baseline, ratio, f.target or "", _met(f)]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    """What the figures were measured on: they mean nothing without it."""
    info: dict[str, Any] = {
        "cores": os.cpu_count(),
        "cpu": _first_line_with("/proc/cpuinfo", "model name"),
        "memory_gib": _memory_gib(),
        "system": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "load_average": [round(load, 2) for load in os.getloadavg()],
        "commit": _run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"]),
    }
    info.update(_server_versions())
    return info


def _first_line_with(path: str, key: str) -> str | None:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _memory_gib() -> float | None:
    total = _first_line_with("/proc/meminfo", "MemTotal")
    return round(int(total.split()[0]) / 1024 / 1024, 1) if total else None


def _run(argv: list[str]) -> str | None:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def _server_versions() -> dict[str, str | None]:
    """PostgreSQL's and Redis's versions, asked of the servers the run used (unknown if unreachable)."""
    versions: dict[str, str | None] = {"postgresql": None, "redis": None}
    try:
        database_url, redis_url = server_urls()
        plain = database_url.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(plain, connect_timeout=5) as connection:
            versions["postgresql"] = connection.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
        versions["redis"] = str(redis.Redis.from_url(redis_url, socket_timeout=5).info("server")["redis_version"])
    except (OSError, psycopg.Error, redis.RedisError):  # the table is still worth having without them
        pass
    return versions


def describe(info: dict[str, Any]) -> str:
    load = ", ".join(str(value) for value in info.get("load_average") or [])
    return (
        f"{info.get('cores')} cores ({info.get('cpu') or 'unknown CPU'}), {info.get('memory_gib')} GiB, "
        f"{info.get('system')}, Python {info.get('python')}, PostgreSQL {info.get('postgresql') or '?'}, "
        f"Redis {info.get('redis') or '?'}; load average at the end {load}; commit {info.get('commit') or '?'}"
    )


def save(figures: list[Figure], info: dict[str, Any]) -> Path:
    """Write the run to bench/results/ and the table into docs/benchmarks.md; return the run's file."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y-%m-%dT%H%M%SZ", time.gmtime())
    document = {"finished_at": stamp, "machine": info, "figures": [asdict(f) for f in figures]}
    text = json.dumps(document, indent=2) + "\n"
    path = RESULTS_DIR / f"{stamp}.json"
    path.write_text(text)
    (RESULTS_DIR / "latest.json").write_text(text)
    docs = DOCS.read_text()
    if START in docs and END in docs:
        head, rest = docs.split(START, 1)
        _, tail = rest.split(END, 1)
        section = f"{START}\nThe latest `make bench` ({stamp}), on {describe(info)}:\n\n{table(figures)}\n{END}"
        DOCS.write_text(head + section + tail)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="the run's JSON Lines file (BENCH_RESULTS)")
    parser.add_argument("--save", action="store_true", help="write bench/results/ and docs/benchmarks.md")
    args = parser.parse_args()
    figures = read(args.results)
    info = machine()
    print(f"== every benchmark, on {describe(info)}")
    print(table(figures) if figures else "(no figures were recorded)")
    if args.save:
        print(f"written to {save(figures, info).relative_to(ROOT)} and docs/benchmarks.md")


if __name__ == "__main__":
    main()
