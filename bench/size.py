"""bench.size: what the queue's operations and reads cost as the tables grow from 1,000 to 1,000,000 batches.

A queue that has run for a year holds a million finished batches behind a
queue of thousands: every operation and read must stay about as fast as on a
new one. For each size in --sizes (finished batches; queued = a tenth of that,
at most --max-queued, so 1,000/100, 100,000/10,000 and 1,000,000/100,000 by
default), the tables are emptied and filled by INSERT ... SELECT generate_series
with triggers off (session_replication_role), as bench.retention does: the
finished batches in the four terminal statuses with 2 items and 2 log lines
each, the queued ones with 1 or 2 pending items and their creation's log line,
and one batch running; then VACUUM ANALYZE. The queue is not paused and no
worker runs. Then --samples calls of each kind (after one untimed warm-up),
through the app in this process:

- create: queue_manager.enqueue of a 2-profile batch (as POST /batches pays
  it: lock, write and commit in one round trip; a batch runs, so no promotion);
- POST /api/v1/batches: the same creation through the API (token, validation,
  profile locks, JSON), with the Flask test client;
- move: queue_manager.move of a random queued batch to a random position;
- cancel: queue_manager.cancel of a random queued batch;
- promote: the running batch is ended (untimed, one UPDATE), then
  queue_manager.promote_next_batch(), the chained promotion after a run's end:
  the queue lock, the promotion statement, the commit and the run's dispatch
  to the broker;
- the table's first page: GET /batches, the whole HTML page, signed in as a viewer;
- GET /api/v1/batches (the first 50) with an API token;
- GET /metrics from an allowed address, as bench.metrics scrapes it.

Each batch and position is chosen before the clock starts. Where the time
goes, for each kind: the statement that took longest in the timed calls, as
the app ran it (psycopg prepares a statement after 5 runs on a connection, and
PostgreSQL may then plan it once for any values: a generic plan); then one
more call is made with its statements captured, and each is replayed under
EXPLAIN ANALYZE (planned afresh for its values) in a transaction rolled back,
naming the plan node where the time went (creation's one-message script is
explained from its statement). The two differ when a generic plan is worse.
Each size prints its table, then a growth table of every measure's p50 at each
size and the ratio of the largest size's to the smallest's. The largest size's
p50s are recorded with the issue's targets: create, move, cancel and promote
under 30 ms, the table's first page under 150 ms, GET /api/v1/batches under
100 ms, /metrics under 50 ms.

What grows, and why (docs/benchmarks.md#size-benchsizepy has the figures,
before and after the fixes this bench led to):

- the table's first page and GET /api/v1/batches count every batch for their
  total (an index-only scan); their rows are read as the table's three parts,
  each in its own index's order, and the creators one index probe each;
- /metrics counts the batches by status: an index-only scan of `batch_status`,
  one entry per batch;
- create, move and cancel count queued batches (a position is derived from
  the ranks: app/models/batches.py), an index scan of up to the whole queue:
  they grow with the queue, not with the finished batches;
- promote is flat: its check that no batch runs names the statuses as the
  partial index batch_one_running does, so even the generic plan of a prepared
  statement is one index probe (it read every batch while they were bound).

    .venv/bin/python -m bench.size [--sizes 1000,100000,1000000] [--max-queued 100000] [--samples 30]

Uses DATABASE_URL / REDIS_URL when set, else the embedded servers under ./var/.
It works in a database of its own (batchq_bench_size, or --database) and Redis database 5.
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg

from app.services.status_counts import RECOUNT
from bench.results import record
from bench.setup import bench_environment, percentile

BENCH_DB = "batchq_bench_size"
BENCH_REDIS_DB = 5
CHANNEL = "batchq-bench-size:events"
PROFILES = 100
VIEWER, PASSWORD = "bench-viewer", "bench-password"
FLAT = 2.0  # a p50 within this many times the smallest size's is called flat
# The measures whose creation statement goes to the driver in one message with the lock and the commit.
CREATIONS = ("create (enqueue)", "POST /api/v1/batches")

# The targets (ms), by measure.
TARGETS = {
    "create (enqueue)": 30.0,
    "move": 30.0,
    "cancel": 30.0,
    "promote": 30.0,
    "GET /batches (the table's first page)": 150.0,
    "GET /api/v1/batches": 100.0,
    "GET /metrics": 50.0,
}

# Triggers off (the log lines' commit-order trigger, the foreign keys' checks): rows written straight, in seconds.
# Ids follow creation: the finished batches first (terminal statuses in turn), then the running one, then the
# queue in order. Each status's items and counters agree: done 2 succeeded, failed 1 + 1, stopped 1 and 1 pending,
# cancelled 2 pending.
FILL = """
SET session_replication_role = replica;
TRUNCATE batch_logs, batch_items, batches, profiles RESTART IDENTITY CASCADE;
INSERT INTO profiles (name, attributes, created_at)
    SELECT 'bench-' || g, '{}', now() - interval '400 days' FROM generate_series(1, %(profiles)s) AS g;
INSERT INTO batches (name, status, queue_rank, processor, parameters, profile_ids, total_items, succeeded_items,
    failed_items, error, run_attempts, created_at, created_by, started_at, finished_at)
SELECT 'bench-' || g, s.status,
    CASE WHEN s.status = 'queued' THEN (g - %(finished)s - 1) * %(gap)s END,
    'noop', '{}',
    CASE s.items WHEN 1 THEN ARRAY[1 + g %% %(profiles)s]
        ELSE ARRAY[1 + g %% %(profiles)s, 1 + (g + 1) %% %(profiles)s] END,
    s.items,
    CASE s.status WHEN 'done' THEN 2 WHEN 'failed' THEN 1 WHEN 'stopped' THEN 1 ELSE 0 END,
    CASE s.status WHEN 'failed' THEN 1 ELSE 0 END,
    CASE s.status WHEN 'failed' THEN '1 of 2 items failed' END,
    CASE WHEN s.status IN ('queued', 'cancelled') THEN 0 ELSE 1 END,
    t.created, (ARRAY['api', 'alice', 'bob', 'nightly'])[1 + g %% 4],
    CASE WHEN s.status NOT IN ('queued', 'cancelled') THEN t.created + interval '1 second' END,
    CASE WHEN s.status NOT IN ('queued', 'in_progress') THEN t.created + interval '2 seconds' END
FROM generate_series(1, %(total)s) AS g,
    LATERAL (SELECT CASE
        WHEN g <= %(finished)s THEN (ARRAY['done', 'done', 'done', 'failed', 'stopped', 'cancelled'])[1 + g %% 6]
        WHEN g = %(finished)s + 1 THEN 'in_progress'
        ELSE 'queued' END AS status,
        CASE WHEN g > %(finished)s + 1 THEN 1 + g %% 2 ELSE 2 END AS items) AS s,
    LATERAL (SELECT now() - (%(total)s - g + 60) * interval '10 seconds' AS created) AS t;
INSERT INTO batch_items (batch_id, position, profile_id, status, attempts, started_at, finished_at)
SELECT b.id, i.place - 1, i.profile_id,
    CASE
        WHEN b.status = 'done' OR (b.status IN ('failed', 'stopped') AND i.place = 1) THEN 'succeeded'
        WHEN b.status = 'failed' THEN 'failed'
        WHEN b.status = 'in_progress' AND i.place = 1 THEN 'running'
        ELSE 'pending' END,
    CASE WHEN b.status IN ('done', 'failed') OR (b.status IN ('stopped', 'in_progress') AND i.place = 1)
        THEN 1 ELSE 0 END,
    CASE WHEN b.status IN ('done', 'failed') OR (b.status IN ('stopped', 'in_progress') AND i.place = 1)
        THEN b.started_at END,
    CASE WHEN b.status IN ('done', 'failed') OR (b.status = 'stopped' AND i.place = 1) THEN b.finished_at END
FROM batches b, unnest(b.profile_ids) WITH ORDINALITY AS i(profile_id, place);
INSERT INTO batch_logs (batch_id, at, level, message)
SELECT b.id, b.created_at, 'info', 'created by ' || b.created_by || ' with ' || b.total_items || ' profiles'
FROM batches b WHERE b.status IN ('queued', 'in_progress')
UNION ALL
SELECT b.id, b.finished_at, 'info', 'item ' || i || '/2 ended' FROM batches b, generate_series(1, 2) AS i
WHERE b.status NOT IN ('queued', 'in_progress')
ORDER BY 1, 2;
SET session_replication_role = DEFAULT;
UPDATE queue_state SET paused = false, paused_by = NULL, paused_at = NULL, paused_reason = NULL, draining = false
"""

# The running batch ends between two promotions (untimed): the slot is free, the queue not paused.
END_RUNNING = """
UPDATE batches SET status = 'done', succeeded_items = total_items, finished_at = now()
WHERE status IN ('in_progress', 'stopping')
"""


@dataclass(frozen=True)
class Statement:
    """One statement replayed under EXPLAIN ANALYZE: its time, and the plan node that spent the most of it."""

    ms: float
    node: str
    node_ms: float
    rows: int
    sql: str

    def line(self) -> str:
        return f"{self.ms:8.2f} ms  {self.node} ({self.rows:,} rows, {self.node_ms:.2f} ms)  `{self.sql}`"


@dataclass
class Explained:
    """The statements of one call, replayed: how many, their total time, the slowest first."""

    statements: list[Statement]
    failed: int = 0

    def lines(self, shown: int = 2) -> list[str]:
        total = sum(statement.ms for statement in self.statements)
        head = f"{len(self.statements)} statements, {total:.2f} ms in all"
        if self.failed:
            head += f" ({self.failed} could not be replayed)"
        slowest = sorted(self.statements, key=lambda statement: -statement.ms)[:shown]
        return [head, *(statement.line() for statement in slowest)]


@dataclass
class Size:
    """One size's figures: each measure's times (ms) and its slowest statement's plan."""

    finished: int
    queued: int
    fill_seconds: float
    times: dict[str, list[float]] = field(default_factory=dict)
    explained: dict[str, Explained] = field(default_factory=dict)
    as_run: dict[str, str] = field(default_factory=dict)


class Capture:
    """The statements the app sends (engine events): each one's time while a measure is timed, and while `on`,
    the statements themselves, which EXPLAIN replays."""

    def __init__(self) -> None:
        self.on = False
        self.statements: list[tuple[str, Any]] = []
        self.measure: str | None = None
        self.ran: dict[str, dict[str, list[float]]] = {}

    def listen(self, engine: Any) -> None:
        from sqlalchemy import event

        event.listen(engine, "before_cursor_execute", self.before)
        event.listen(engine, "after_cursor_execute", self.after)

    def before(self, _conn: Any, _cursor: Any, statement: str, parameters: Any, context: Any, *_: Any) -> None:
        context.bench_started = time.perf_counter()
        if self.on:
            self.statements.append((statement, parameters))

    def after(self, _conn: Any, _cursor: Any, statement: str, _parameters: Any, context: Any, *_: Any) -> None:
        if self.measure is not None:
            ms = (time.perf_counter() - context.bench_started) * 1000
            self.ran.setdefault(self.measure, {}).setdefault(statement, []).append(ms)

    def slowest_as_run(self, measure: str) -> str:
        """The statement that took the most time in the measure's timed calls: its p50 per execution."""
        ran = self.ran.get(measure)
        if measure in CREATIONS:
            return (
                "as run: the creation goes to the driver in one message with the lock and the commit (replayed below)"
            )
        if not ran:
            return "as run: no statement"
        sql, times = max(ran.items(), key=lambda item: sum(item[1]))
        return f"as run: {percentile(times, 0.5):8.2f} ms p50 over {len(times)} executions  `{short(sql)}`"


def short(sql: str, width: int = 80) -> str:
    """A statement on one line, a SELECT's column list left out (most begin `SELECT batches.id, batches.name`)."""
    text = " ".join(sql.split())
    if text.upper().startswith("SELECT ") and " FROM " in text:
        text = "SELECT ... " + text[text.index(" FROM ") + 1 :]
    return text[:width]


# --- the fill -------------------------------------------------------------------


def queued_for(finished: int, max_queued: int) -> int:
    return max(1, min(finished // 10, max_queued))


def fill(url: str, finished: int, queued: int) -> float:
    """Empty the tables and write the batches, their items and logs; return the seconds it took, vacuum included."""
    from app.services.queue_ranks import RANK_GAP

    started = time.perf_counter()
    sizes = {"profiles": PROFILES, "finished": finished, "total": finished + 1 + queued, "gap": RANK_GAP}
    with psycopg.connect(url, autocommit=True) as connection:
        for statement in filter(str.strip, FILL.split(";\n")):
            connection.execute(statement, sizes if "%(" in statement else None)
        for statement in RECOUNT.split(";\n"):  # the triggers were off: the status counts saw none of it
            connection.execute(statement)
        connection.execute("VACUUM ANALYZE profiles, batches, batch_items, batch_logs")
    return time.perf_counter() - started


# --- the calls ------------------------------------------------------------------


def sample(prepare: Callable[[], Callable[[], Any]], samples: int) -> list[float]:
    """Milliseconds of `samples` calls, each made ready by `prepare` before the clock starts (one warm-up first)."""
    from app.extensions import db

    prepare()()
    db.session.remove()
    times = []
    for _ in range(samples):
        call = prepare()
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
        db.session.remove()
    return times


def random_queued() -> tuple[int, int]:
    """A random queued batch's id, and the queue's length (not timed)."""
    from app.extensions import db

    text = db.text
    count = db.session.execute(text("SELECT count(*) FROM batches WHERE queue_rank IS NOT NULL")).scalar_one()
    batch_id = db.session.execute(
        text("SELECT id FROM batches WHERE queue_rank IS NOT NULL ORDER BY queue_rank OFFSET :skip LIMIT 1"),
        {"skip": random.randrange(count)},
    ).scalar_one()
    db.session.rollback()
    return batch_id, count


def expect(response: Any, status: int) -> Any:
    assert response.status_code == status, (response.status_code, response.get_data(as_text=True)[:500])
    return response


def kinds(app: Any, token: str) -> dict[str, Callable[[], Callable[[], Any]]]:
    """Each measure: given nothing, the call to time (its batch and position chosen first)."""
    from app.extensions import db
    from app.services import queue_manager
    from app.services.queue_manager import NewBatch

    api = app.test_client()
    headers = {"Authorization": f"Bearer {token}"}
    viewer = app.test_client()
    expect(viewer.post("/login", data={"username": VIEWER, "password": PASSWORD}), 302)
    scraper = app.test_client()
    body = {"name": "bench-api", "processor": "noop", "parameters": {}, "profile_ids": [1, 2]}

    def create() -> Callable[[], Any]:
        return lambda: queue_manager.enqueue(NewBatch("bench", "noop", {}, [1, 2], created_by="bench"))

    def move() -> Callable[[], Any]:
        batch_id, count = random_queued()
        target = random.randint(1, count)
        return lambda: queue_manager.move(batch_id, target, "bench")

    def cancel() -> Callable[[], Any]:
        batch_id, _ = random_queued()
        return lambda: queue_manager.cancel(batch_id, "bench")

    def promote() -> Callable[[], Any]:
        db.session.execute(db.text(END_RUNNING))
        db.session.commit()

        def run() -> None:
            assert queue_manager.promote_next_batch() is not None, "nothing was promoted"

        return run

    return {
        "create (enqueue)": create,
        "POST /api/v1/batches": lambda: lambda: expect(api.post("/api/v1/batches", json=body, headers=headers), 201),
        "move": move,
        "cancel": cancel,
        "promote": promote,
        "GET /batches (the table's first page)": lambda: lambda: expect(viewer.get("/batches"), 200),
        "GET /api/v1/batches": lambda: lambda: expect(api.get("/api/v1/batches", headers=headers), 200),
        "GET /metrics": lambda: lambda: expect(scraper.get("/metrics"), 200),
    }


# --- where the time goes ----------------------------------------------------------


def costliest(node: dict[str, Any]) -> tuple[float, str, int]:
    """The plan node that spent the most time of its own (its children's time taken out): ms, name, rows."""
    loops = node.get("Actual Loops", 1) or 1
    total = node.get("Actual Total Time", 0.0) * loops
    children = node.get("Plans", [])
    own = total - sum(child.get("Actual Total Time", 0.0) * (child.get("Actual Loops", 1) or 1) for child in children)
    name = node["Node Type"]
    if "Index Name" in node:
        name += f" using {node['Index Name']}"
    elif "Relation Name" in node:
        name += f" on {node['Relation Name']}"
    found = [(own, name, int(node.get("Actual Rows", 0) * loops))]
    found.extend(costliest(child) for child in children)
    return max(found)


def explain(statements: list[tuple[str, Any]], setup: str | None = None) -> Explained:
    """Replay the statements under EXPLAIN ANALYZE in one transaction (after `setup`, if any), rolled back."""
    from app.extensions import db

    connection = db.session.connection()
    if setup:
        connection.exec_driver_sql(setup)
    explained = Explained([])
    for sql, parameters in statements:
        if not sql.lstrip().upper().startswith(("SELECT", "WITH", "UPDATE", "INSERT", "DELETE")):
            continue
        try:
            with connection.begin_nested():
                plan = connection.exec_driver_sql(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}", parameters).scalar()
        except Exception:  # noqa: BLE001  (counted: a replay that no longer applies)
            explained.failed += 1
            continue
        top: dict[str, Any] = plan[0] if plan else {"Plan": {"Node Type": "no plan"}, "Execution Time": 0.0}
        own_ms, node, rows = costliest(top["Plan"])
        explained.statements.append(Statement(top["Execution Time"], node, own_ms, rows, short(sql)))
    db.session.rollback()
    return explained


def creation_statements() -> list[tuple[str, Any]]:
    """Creation's statement as enqueue sends it (in one message with the lock and the commit, past the engine)."""
    from app.extensions import db
    from app.models._types import utcnow
    from app.services import queue_create
    from app.services.queue_manager import NewBatch

    compiled = queue_create.CREATE_BATCH.compile(dialect=db.engine.dialect)
    new = NewBatch("bench", "noop", {}, [1, 2], created_by="bench")
    parameters = compiled.params | queue_create._parameters(new, utcnow())
    return [(str(compiled), parameters)]


def explained_call(prepare: Callable[[], Callable[[], Any]], capture: Capture, label: str) -> Explained:
    from app.extensions import db

    call = prepare()
    capture.statements.clear()
    capture.on = True
    try:
        call()
    finally:
        capture.on = False
        db.session.remove()
    statements = list(capture.statements)
    if label in CREATIONS:
        statements += creation_statements()
    # A promotion replayed as it ran: the batch it promoted ended first, so the slot is free again.
    return explain(statements, END_RUNNING if label == "promote" else None)


# --- one size ---------------------------------------------------------------------


def measure(app: Any, token: str, capture: Capture, size: Size, samples: int) -> None:
    """Time every kind of call at this size, then explain one more of each."""
    from app.extensions import db
    from app.metrics.gauges import read_gauges

    with app.app_context():
        gauges = read_gauges()
        assert sum(gauges.by_status.values()) == size.finished + 1 + size.queued, gauges.by_status
        for label, prepare in kinds(app, token).items():
            capture.measure = label
            try:
                size.times[label] = sample(prepare, samples)
            finally:
                capture.measure = None
            size.explained[label] = explained_call(prepare, capture, label)
        size.as_run = {label: capture.slowest_as_run(label) for label in size.times}
        capture.ran.clear()
        running = db.session.execute(
            db.text("SELECT count(*) FROM batches WHERE status IN ('in_progress', 'stopping')")
        ).scalar_one()
        db.session.remove()
    assert running == 1, f"{running} batches running after the promotions"


def print_size(size: Size) -> None:
    print(
        f"\n{size.finished:,} finished + {size.queued:,} queued + 1 running batches"
        f" (filled and vacuumed in {size.fill_seconds:.1f} s), ms"
    )
    print(f"  {'':40} {'n':>4} {'p50':>8} {'p95':>8} {'max':>8}  target")
    for label, times in size.times.items():
        target = TARGETS.get(label)
        print(
            f"  {label:40} {len(times):4d} {percentile(times, 0.5):8.2f} {percentile(times, 0.95):8.2f}"
            f" {max(times):8.2f}  {f'< {target:g}' if target else ''}"
        )
    print(
        "  where the time goes: the statement that took longest in the timed calls (as the app runs it, prepared"
        " after a few runs), then one more call's statements replayed under EXPLAIN ANALYZE (planned afresh):"
    )
    for label, explained in size.explained.items():
        head, *slowest = explained.lines()
        print(f"  {label:40} {size.as_run[label]}")
        print(f"  {'':40} {head}")
        for line in slowest:
            print(f"    {line}")


def print_growth(sizes: list[Size]) -> None:
    first, last = sizes[0], sizes[-1]
    heads = [f"{size.finished:,}/{size.queued:,}" for size in sizes]
    print("\ngrowth: p50 (ms) at each size (finished/queued batches)")
    print(f"  {'':40} " + " ".join(f"{head:>16}" for head in heads) + f" {'last/first':>11}")
    for label in first.times:
        p50s = [percentile(size.times[label], 0.5) for size in sizes]
        ratio = p50s[-1] / p50s[0] if p50s[0] else float("inf")
        verdict = "flat" if ratio < FLAT else "grows"
        print(f"  {label:40} " + " ".join(f"{p50:16.2f}" for p50 in p50s) + f" {ratio:10.2f}x  {verdict}")
    print(f"  flat: the largest size's p50 within {FLAT:g}x the smallest's ({first.finished:,} -> {last.finished:,})")


def record_top(sizes: list[Size]) -> None:
    first, last = sizes[0], sizes[-1]
    for label, times in last.times.items():
        p50 = percentile(times, 0.5)
        target = TARGETS.get(label)
        record(
            "size",
            f"{label}, {last.finished:,} finished + {last.queued:,} queued, p50",
            p50,
            "ms",
            baseline=percentile(first.times[label], 0.5),
            baseline_measure=f"{first.finished:,} finished + {first.queued:,} queued",
            target=f"< {target:g} ms" if target else None,
            met=p50 < target if target else None,
        )


def sizes_of(text: str) -> list[int]:
    sizes = [int(part.replace("_", "")) for part in text.split(",") if part.strip()]
    if not sizes or min(sizes) < 10:
        raise argparse.ArgumentTypeError("sizes are numbers of finished batches, at least 10 each")
    return sorted(sizes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=sizes_of, default=[1_000, 100_000, 1_000_000], help="finished batches")
    parser.add_argument("--max-queued", type=int, default=100_000, help="queued: a tenth of finished, at most this")
    parser.add_argument("--samples", type=int, default=30, help="timed calls of each kind at each size")
    parser.add_argument("--database", default=BENCH_DB, help="the database to create afresh and work in")
    args = parser.parse_args()

    env = bench_environment(args.database, BENCH_REDIS_DB, CHANNEL)
    from app import create_app
    from app.extensions import db
    from app.models import Role
    from app.services import accounts

    app = create_app(WTF_CSRF_ENABLED=False)
    capture = Capture()
    random.seed(20261215)
    with app.app_context():
        capture.listen(db.engine)
        token = accounts.create_token("bench")
        accounts.create_user(VIEWER, PASSWORD, Role.VIEWER)
        db.session.commit()
        db.session.remove()

    done: list[Size] = []
    for finished in args.sizes:
        queued = queued_for(finished, args.max_queued)
        size = Size(finished, queued, fill(env["DATABASE_URL"], finished, queued))
        measure(app, token, capture, size, args.samples)
        print_size(size)
        done.append(size)
    print_growth(done)
    print(
        "targets: create, move, cancel, promote < 30 ms; the table's first page < 150 ms;"
        " GET /api/v1/batches < 100 ms; /metrics < 50 ms"
    )
    record_top(done)


if __name__ == "__main__":
    main()
