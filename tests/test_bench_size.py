"""bench.size still runs end to end at a tiny size: it fills, times, explains, prints its growth table and records.

It runs as `make bench` runs it, in a process of its own (it sets its environment and builds its own app), on
the session's servers, in a database named for this session, which the test drops afterwards.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg

from bench.results import RESULTS_ENV, read
from bench.size import TARGETS
from tests.conftest import SESSION_TAG

ROOT = Path(__file__).resolve().parent.parent
MEASURES = [*TARGETS, "POST /api/v1/batches"]


def test_bench_size_prints_each_size_and_the_growth_and_records_the_largest(
    servers: tuple[str, str], tmp_path: Path
) -> None:
    database_url, redis_url = servers
    name = f"batchq_bench_size_{SESSION_TAG}"
    results = tmp_path / "results.jsonl"
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        RESULTS_ENV: str(results),
    }
    try:
        done = subprocess.run(
            [sys.executable, "-m", "bench.size", "--sizes", "20,100", "--samples", "2", "--database", name],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        plain = database_url.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(plain, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "20 finished + 2 queued + 1 running" in out and "100 finished + 10 queued + 1 running" in out
    growth = out[out.index("growth: p50") :]
    for measure in MEASURES:
        assert measure in growth, f"{measure} missing from the growth table"
    assert "where the time goes" in out and "statements," in out
    figures = read(results)
    assert sorted(figure.measure.split(", 100 finished")[0] for figure in figures) == sorted(MEASURES)
    assert all(figure.bench == "size" and figure.value > 0 and figure.baseline for figure in figures)
    assert {figure.measure.split(",")[0] for figure in figures if figure.target} == set(TARGETS)
