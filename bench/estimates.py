"""Estimate benchmark: how far each queued batch's `estimated_start_at` lands from its real start.

Not a test: it prints figures and never fails on them. It exits non-zero only
if it crashed or a batch did not finish in time.

A real prefork worker is started as bench.handoff starts it (the Procfile's command).

1. Warm-up: --warmup batches (default 6), alternating `noop` and `sleep` and
   drawn like the mixed run's, run back to back, so that each processor has the
   history the estimate reads (the wall time of its last 20 finished batches
   over the items they ran).
2. Mixed run: with the queue paused, --batches batches (default 30) are
   enqueued, alternating `noop` of 20 to 200 profiles and `sleep` of 5 to 30
   profiles at 0.02 to 0.1 s an item (random draws, fixed seed). While paused
   every estimate is null, so the queue is started first: its head is promoted
   and, right after, one `GET /api/v1/batches?per_page=500` (through the app, in
   this process, with a Bearer token) reads every batch's estimated_start_at
   once. Then it waits until every batch has finished and compares each
   estimate with the batch's started_at (stamped as it is promoted).

Printed: the median, p90 and max of the absolute error (seconds) and of the
relative error (|error| / the batch's real wait since the read), the median
signed error (the bias: negative means the estimate was early), and the share
of the queued batches that had an estimate. Beside them, from the same data of
the same run, two naive baselines: every batch ahead (the running one included)
takes the mean batch duration of the warm-up; every item ahead takes the mean
item duration of the warm-up, whatever its processor. Then two lines that tell
where the error comes from: the estimate's own method (items ahead by
processor times a per-processor rate) with the rates measured on the mixed run
itself, in hindsight, and how far the served estimates are from that method
recomputed here with the warm-up's rates. The read lands at a random moment of
the head batch's first items, so the bench also prints how many it had done
and its rest as estimated and as it turned out: once it has done an item, the
estimate takes the head's own pace.

    .venv/bin/python -m bench.estimates [--batches 30] [--warmup 6] [--seed 20261203]

Uses DATABASE_URL / REDIS_URL when set, else the embedded servers under ./var/.
It works in a database of its own (batchq_bench_estimates) and Redis database 11
(12 to 15 belong to bench.recovery, bench.live, bench.handoff and bench.control).
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flask import Flask

from bench.control import wait_for
from bench.handoff import running_worker
from bench.results import record
from bench.setup import bench_environment, insert_profiles, percentile

BENCH_DB = "batchq_bench_estimates"
BENCH_REDIS_DB = 11
CHANNEL = "batchq-bench-estimates:events"
NOOP_PROFILES = (20, 200)
SLEEP_PROFILES = (5, 30)
SLEEP_SECONDS = (0.02, 0.1)
FINISH_LIMIT = 300.0


@dataclass
class Planned:
    name: str
    processor: str
    parameters: dict[str, Any]
    profiles: int


@dataclass
class Outcome:
    """One batch of the mixed run that was queued at the read."""

    position: int  # batches ahead of it at the read, the running one included
    ahead: Counter[str]  # items ahead of it at the read by processor, the running batch's pending ones included
    estimate: float | None  # epoch seconds
    started: float


def draw(rng: random.Random, count: int, prefix: str) -> list[Planned]:
    """`count` batches alternating noop and sleep, the first a noop."""
    planned = []
    for index in range(count):
        if index % 2 == 0:
            planned.append(Planned(f"{prefix}-{index}", "noop", {}, rng.randint(*NOOP_PROFILES)))
        else:
            seconds = round(rng.uniform(*SLEEP_SECONDS), 3)
            planned.append(Planned(f"{prefix}-{index}", "sleep", {"seconds": seconds}, rng.randint(*SLEEP_PROFILES)))
    return planned


def enqueue_all(planned: list[Planned], profile_ids: list[int]) -> None:
    from app.services import queue_manager
    from app.services.queue_manager import NewBatch

    for batch in planned:
        queue_manager.enqueue(
            NewBatch(
                name=batch.name,
                processor=batch.processor,
                parameters=batch.parameters,
                profile_ids=profile_ids[: batch.profiles],
                created_by="bench",
            )
        )


def wait_finished(prefix: str) -> None:
    from app.extensions import db

    wait_for(
        f"every {prefix} batch to finish",
        lambda: (
            not db.session.execute(
                db.text("SELECT EXISTS (SELECT 1 FROM batches WHERE name LIKE :p AND finished_at IS NULL)"),
                {"p": f"{prefix}-%"},
            ).scalar()
        ),
        limit=FINISH_LIMIT,
    )


def finished_rows(prefix: str) -> list[Any]:
    from app.extensions import db

    rows = db.session.execute(
        db.text(
            "SELECT id, name, processor, status, total_items, started_at, finished_at FROM batches"
            " WHERE name LIKE :p ORDER BY started_at"
        ),
        {"p": f"{prefix}-%"},
    ).all()
    db.session.rollback()
    return rows


def read_estimates(app: Flask, token: str) -> tuple[float, list[dict[str, Any]]]:
    """One GET of the batch list, outside any app context (so it has a request's own view); its start and items."""
    client = app.test_client()
    read_at = time.time()
    response = client.get("/api/v1/batches?per_page=500", headers={"Authorization": f"Bearer {token}"})
    if response.status_code != 200:
        raise RuntimeError(f"bench.estimates: GET /api/v1/batches answered {response.status_code}")
    return read_at, response.get_json()["items"]


def outcomes(listed: list[dict[str, Any]], rows: list[Any]) -> list[Outcome]:
    """The batches queued at the read, in queue order, with what was estimated and when they started."""
    started = {row.id: row.started_at.timestamp() for row in rows}
    queued = sorted((b for b in listed if b["status"] == "queued"), key=lambda b: b["queue_position"])
    running = [b for b in listed if b["status"] in ("in_progress", "stopping")]
    ahead: Counter[str] = Counter()
    found = []
    for batch in running + queued:
        if batch["status"] == "queued":
            at = batch["estimated_start_at"]
            found.append(
                Outcome(
                    position=batch["queue_position"] + len(running) - 1,
                    ahead=ahead.copy(),
                    estimate=datetime.fromisoformat(at).timestamp() if at else None,
                    started=started[batch["id"]],
                )
            )
        ahead[batch["processor"]] += batch["progress"]["pending"]
    return found


def seconds_per_item(rows: list[Any], recent: int | None = None) -> dict[str, float]:
    """Per processor, as the estimate reckons it: the wall time of its (`recent` last) batches over their items."""
    seconds: Counter[str] = Counter()
    items: Counter[str] = Counter()
    counted: Counter[str] = Counter()
    for row in sorted(rows, key=lambda row: row.finished_at, reverse=True):
        if recent is not None and counted[row.processor] >= recent:
            continue
        counted[row.processor] += 1
        seconds[row.processor] += (row.finished_at - row.started_at).total_seconds()
        items[row.processor] += row.total_items
    return {processor: seconds[processor] / items[processor] for processor in items}


def errors(estimates: list[float], results: list[Outcome], read_at: float) -> str:
    absolute = [abs(e - r.started) for e, r in zip(estimates, results, strict=True)]
    relative = [a / max(r.started - read_at, 1e-3) * 100 for a, r in zip(absolute, results, strict=True)]
    bias = statistics.median(e - r.started for e, r in zip(estimates, results, strict=True))
    return (
        f"{statistics.median(absolute):6.2f} {percentile(absolute, 0.9):6.2f} {max(absolute):6.2f}"
        f"   {statistics.median(relative):5.1f}% {percentile(relative, 0.9):5.1f}% {max(relative):6.1f}%"
        f"   {bias:+6.2f}"
    )


def rate_text(rates: dict[str, float]) -> str:
    return ", ".join(f"{processor} {seconds * 1000:.1f} ms" for processor, seconds in sorted(rates.items()))


def print_head(listed: list[dict[str, Any]], results: list[Outcome], read_at: float) -> None:
    """The running batch at the read: what the first queued batch's estimate and start say of its rest."""
    running = [b for b in listed if b["status"] in ("in_progress", "stopping")]
    if not running or not results:
        return
    head, first = running[0], results[0]
    total, done = head["progress"]["total"], head["progress"]["total"] - head["progress"]["pending"]
    estimated = f"{first.estimate - read_at:.2f} s" if first.estimate is not None else "none"
    print(
        f"  the running batch at the read: {head['processor']}, {done}/{total} items done;"
        f" its rest estimated {estimated}, took {first.started - read_at:.2f} s"
    )


def print_report(
    warmup: list[Any],
    mixed: list[Any],
    listed: list[dict[str, Any]],
    results: list[Outcome],
    read_at: float,
    promoted: float,
) -> None:
    from app.services.waiting import RECENT_BATCHES

    warm_rates, mixed_rates = seconds_per_item(warmup, RECENT_BATCHES), seconds_per_item(mixed)
    durations = [(r.finished_at - r.started_at).total_seconds() for r in warmup]
    mean_batch = statistics.mean(durations)
    mean_item = sum(durations) / sum(r.total_items for r in warmup)
    print(
        f"warm-up: {len(warmup)} batches, {sum(r.total_items for r in warmup)} items, mean batch {mean_batch:.2f} s;"
        f" per item: {rate_text(warm_rates)} (the rates the estimate reads)"
    )
    elapsed = max(r.finished_at for r in mixed).timestamp() - min(r.started_at for r in mixed).timestamp()
    noop = sum(1 for r in mixed if r.processor == "noop")
    print(
        f"mixed run: {len(mixed)} batches ({noop} noop of {NOOP_PROFILES[0]}..{NOOP_PROFILES[1]} profiles,"
        f" {len(mixed) - noop} sleep of {SLEEP_PROFILES[0]}..{SLEEP_PROFILES[1]} x"
        f" {SLEEP_SECONDS[0]:g}..{SLEEP_SECONDS[1]:g} s), {sum(r.total_items for r in mixed)} items in {elapsed:.1f} s;"
        f" per item: {rate_text(mixed_rates)}; statuses: {', '.join(sorted({r.status for r in mixed}))}"
    )
    if not results:
        print("nothing was queued at the read: no estimate to compare")
        return
    estimated = [r for r in results if r.estimate is not None]
    waits = [r.started - read_at for r in results]
    print(
        f"read {(read_at - promoted) * 1000:.0f} ms after Start; queued then: {len(results)}, with an estimate:"
        f" {len(estimated)} ({len(estimated) / max(1, len(results)):.0%});"
        f" real waits {min(waits):.2f} to {max(waits):.2f} s"
    )
    print_head(listed, results, read_at)
    print(f"  {'seconds':56} {'|error|':>20}   {'|error| / real wait':>21}   {'bias':>6}")
    print(f"  {'':56} {'p50':>6} {'p90':>6} {'max':>6}   {'p50':>6} {'p90':>6} {'max':>7}   {'p50':>6}")

    def line(label: str, estimates: list[float], which: list[Outcome]) -> None:
        print(f"  {label:56} {errors(estimates, which, read_at)}")

    def method(rates: dict[str, float], r: Outcome) -> float:
        return read_at + sum(items * rates[processor] for processor, items in r.ahead.items())

    if estimated:
        line("estimated_start_at (one GET /api/v1/batches)", [r.estimate for r in estimated], estimated)
    line("baseline: batches ahead x mean warm-up batch", [read_at + r.position * mean_batch for r in results], results)
    line(
        "baseline: items ahead x mean warm-up item (any processor)",
        [read_at + sum(r.ahead.values()) * mean_item for r in results],
        results,
    )
    line("hindsight: its method, the mixed run's own rates", [method(mixed_rates, r) for r in results], results)
    if estimated:
        error = statistics.median(abs(r.estimate - r.started) for r in estimated)
        naive = statistics.median(abs(read_at + r.position * mean_batch - r.started) for r in results)
        record(
            "estimates",
            "estimated_start_at |error|, p50",
            error,
            "s",
            baseline=naive,
            baseline_measure="batches ahead x mean batch",
        )
    print("  (bias: median of estimate - started_at, negative = too early)")
    if estimated:
        drift = max(abs(r.estimate - method(warm_rates, r)) for r in estimated) * 1000
        print(f"  estimated_start_at vs its method recomputed here from the warm-up's rates: max {drift:.0f} ms apart")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=30, help="batches of the mixed run")
    parser.add_argument("--warmup", type=int, default=6, help="batches run first, so that each processor has history")
    parser.add_argument("--seed", type=int, default=20261203, help="seed of the batches' sizes and sleeps")
    args = parser.parse_args()
    if args.warmup < 2 or args.batches < 2:
        parser.error("--warmup and --batches take 2 or more (a warm-up batch of each processor; one batch queued)")

    env = bench_environment(BENCH_DB, BENCH_REDIS_DB, CHANNEL)
    from app import create_app
    from app.extensions import db
    from app.services import accounts, queue_manager

    app = create_app()
    rng = random.Random(args.seed)
    warmup, mixed = draw(rng, args.warmup, "warmup"), draw(rng, args.batches, "mixed")
    with app.app_context():
        profile_ids = insert_profiles(max(NOOP_PROFILES[1], SLEEP_PROFILES[1]))
        db.session.commit()
        token = accounts.create_token("bench")
    with running_worker(env, "workers.celery_app"):
        with app.app_context():
            queue_manager.start("bench")  # not paused: the warm-up runs back to back as it is enqueued
            enqueue_all(warmup, profile_ids)
            wait_finished("warmup")
            db.session.execute(db.text("UPDATE queue_state SET paused = true, paused_by = 'bench', paused_at = now()"))
            db.session.commit()
            enqueue_all(mixed, profile_ids)
            queue_manager.start("bench")
            promoted = time.time()
            db.session.remove()
        read_at, listed = read_estimates(app, token)
        with app.app_context():
            wait_finished("mixed")
            warmup_rows, mixed_rows = finished_rows("warmup"), finished_rows("mixed")
            db.session.remove()
    results = outcomes(listed, mixed_rows)
    print_report(warmup_rows, mixed_rows, listed, results, read_at, promoted)


if __name__ == "__main__":
    main()
