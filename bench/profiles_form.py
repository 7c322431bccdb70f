"""Profiles benchmark: the creation form with 10,000 profiles, beside a bare page of the same rows.

Not a test: it prints figures and never fails on them.

The database gets --profiles (default 10,000) profiles, each with one of 20
region tags and every fifth with a `gpu` tag too. Then, in this process,
through Flask's test client (no network, the same for every figure):

- GET /batches/new, the creation form: the tag checkboxes with their counts
  and one checkbox per profile; --samples timed requests after two untimed;
- the baseline, measured in the same run: a bare Flask app (no sign-in, no
  layout, no ORM) whose one endpoint reads the same (id, name) rows with
  psycopg and renders them as the same plain checkbox rows with Jinja: what
  any page listing every profile pays;
- GET /profiles (100 a page, the tag filter's counts included);
- POST /api/v1/profiles/import of all of them as one CSV, into an empty table
  and again (all updates), each once.

Each figure is the whole request as the test client sees it; sizes are the
response body's bytes.

    .venv/bin/python -m bench.profiles_form [--profiles 10000] [--samples 30]

Uses DATABASE_URL / REDIS_URL when set, else the embedded servers under ./var/.
It works in a database of its own (batchq_bench_profiles) and Redis database 10.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from typing import Any

import psycopg
from flask import Flask, render_template_string

from bench.results import record
from bench.setup import bench_environment, percentile

BENCH_DB = "batchq_bench_profiles"
BENCH_REDIS_DB = 10
CHANNEL = "batchq-bench-profiles:events"
REGIONS = 20

BARE_PAGE = """<!doctype html><title>profiles</title><form><ul>
{% for id, name in rows %}<li><label><input type="checkbox" name="profile_ids" value="{{ id }}"> {{ name }}</label></li>
{% endfor %}</ul></form>"""


def profiles_csv(count: int) -> bytes:
    """The bench's profiles as an import file: name, tags, one attribute column."""
    lines = ["name,tags,n"]
    for index in range(count):
        tags = f"region-{index % REGIONS}" + (" gpu" if index % 5 == 0 else "")
        lines.append(f"bench-{index:05d},{tags},{index}")
    return ("\n".join(lines) + "\n").encode()


def bare_app(database_url: str) -> Flask:
    """The baseline: the same rows, read and rendered with nothing else around them."""
    app = Flask("bare")
    plain = database_url.replace("postgresql+psycopg://", "postgresql://")

    @app.get("/rows")
    def rows() -> str:
        with psycopg.connect(plain) as connection:
            found = connection.execute("SELECT id, name FROM profiles ORDER BY name, id").fetchall()
        return render_template_string(BARE_PAGE, rows=found)

    return app


def timed(call: Callable[[], Any], samples: int) -> tuple[list[float], int]:
    """Milliseconds of each of `samples` calls after two untimed ones, and the last body's size."""
    for _ in range(2):
        call()
    times, size = [], 0
    for _ in range(samples):
        started = time.perf_counter()
        response = call()
        times.append((time.perf_counter() - started) * 1000)
        if response.status_code != 200:
            raise RuntimeError(f"bench.profiles_form: {response.status_code} from {response.request.path}")
        size = len(response.get_data())
    return times, size


def row(label: str, times: list[float], size: int) -> str:
    p50, p95 = percentile(times, 0.5), percentile(times, 0.95)
    return f"| {label} | {p50:.1f} | {p95:.1f} | {max(times):.1f} | {size / 1024:.0f} KiB |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profiles", type=int, default=10_000)
    parser.add_argument("--samples", type=int, default=30)
    args = parser.parse_args()

    bench_environment(BENCH_DB, BENCH_REDIS_DB, CHANNEL)
    from app import create_app
    from app.models import Role
    from app.services import accounts

    app = create_app(WTF_CSRF_ENABLED=False)
    with app.app_context():
        token = accounts.create_token("bench")
        accounts.create_user("bench", "bench-password", Role.OPERATOR)
    api = app.test_client()
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "text/csv"}
    content = profiles_csv(args.profiles)
    imports = []
    for _ in range(2):
        started = time.perf_counter()
        answer = api.post("/api/v1/profiles/import", data=content, headers=headers)
        imports.append(((time.perf_counter() - started) * 1000, answer.get_json()))

    page = app.test_client()
    page.post("/login", data={"username": "bench", "password": "bench-password"})
    form_times, form_size = timed(lambda: page.get("/batches/new"), args.samples)
    list_times, list_size = timed(lambda: page.get("/profiles"), args.samples)
    bare = bare_app(os.environ["DATABASE_URL"]).test_client()
    bare_times, bare_size = timed(lambda: bare.get("/rows"), args.samples)

    print(f"bench.profiles_form: {args.profiles} profiles, {args.samples} requests each")
    print("| request | p50 ms | p95 ms | max ms | body |")
    print("| --- | --- | --- | --- | --- |")
    print(row("baseline: bare Flask page of the same rows (psycopg + Jinja)", bare_times, bare_size))
    print(row("GET /batches/new (tags with counts + one checkbox per profile)", form_times, form_size))
    print(row("GET /profiles (100 a page, tag counts)", list_times, list_size))
    for label, (ms, body) in zip(("into an empty table", "again: all updates"), imports, strict=True):
        print(f"POST /api/v1/profiles/import, {len(content) / 1024:.0f} KiB CSV, {label}: {ms:.0f} ms -> {body}")
    record(
        "profiles_form",
        f"GET /batches/new, {args.profiles:,} profiles, p50",
        percentile(form_times, 0.5),
        "ms",
        baseline=percentile(bare_times, 0.5),
        baseline_measure="bare Flask page of the same rows",
    )


if __name__ == "__main__":
    main()
