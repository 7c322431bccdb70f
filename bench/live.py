"""Live-page benchmark: from a committed state change to the changed row in a real browser.

Starts the real web server (gunicorn with this repository's gunicorn.conf.py),
opens /batches in headless Debian Chromium, and times, for each sample, the
commit of a queue change (a batch queued, then cancelled, through the queue
manager) to the moment the row's new text is in the page's DOM (a
MutationObserver stamps it). Then fills the table to 10,000 batches and times
GET /batches. Not a test: it prints figures and never fails on them.

    .venv/bin/python -m bench.live [--samples 60] [--batches 10000] [--screenshot docs/screenshot-table.png]

Uses DATABASE_URL / REDIS_URL when set, else the embedded servers under ./var/.
It works in a database of its own (batchq_bench_live) and Redis database 13.
"""

from __future__ import annotations

import argparse
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import requests

from bench.chromium import CHROMIUM, CHROMIUM_ARGS
from bench.results import record
from bench.setup import ROOT, bench_environment, percentile

BENCH_DB = "batchq_bench_live"
BENCH_REDIS_DB = 13
CHANNEL = "batchq-bench-live:events"
USER, PASSWORD = "bench", "bench-password"

# Resolves with the wall-clock time (ms) at which the selector's text first equals `text`.
WATCH_JS = """([selector, text]) => {
  window.__seen = null;
  const check = () => {
    const el = document.querySelector(selector);
    if (el && el.textContent.trim().toLowerCase() === text) {
      window.__seen = performance.timeOrigin + performance.now();
      return true;
    }
    return false;
  };
  if (check()) return;
  const observer = new MutationObserver(() => { if (check()) observer.disconnect(); });
  observer.observe(document.body, {subtree: true, childList: true, characterData: true, attributes: true});
}"""


def summary(values_ms: list[float]) -> str:
    return (
        f"p50 {percentile(values_ms, 0.50):7.2f} ms   p95 {percentile(values_ms, 0.95):7.2f} ms   "
        f"max {max(values_ms):7.2f} ms   (n={len(values_ms)})"
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


WEB_LOGS = ROOT / "var" / "bench-logs"


def start_web(env: dict[str, str], port: int, app: str = "wsgi:app") -> subprocess.Popen[bytes]:
    """gunicorn as the Procfile runs it, serving `app` on `port`, ready once /login answers."""
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "--config",
        "gunicorn.conf.py",
        "--access-logfile",
        "/dev/null",
        app,
    ]
    # Its errors go to a file: a bench that hid a 500's traceback would leave only the client's side of it.
    log = WEB_LOGS / f"web-{port}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as errors:
        process = subprocess.Popen(
            command, cwd=ROOT, env={**env, "PORT": str(port)}, stdout=subprocess.DEVNULL, stderr=errors
        )
    print(f"(web on port {port}: its log is {log.relative_to(ROOT)})", file=sys.stderr, flush=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if requests.get(f"http://127.0.0.1:{port}/login", timeout=5).status_code == 200:
                return process
        except requests.RequestException:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("gunicorn did not answer within 60 s")


def signed_in_session(url: str) -> requests.Session:
    session = requests.Session()
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', session.get(f"{url}/login").text)
    assert token is not None
    session.post(f"{url}/login", data={"username": USER, "password": PASSWORD, "csrf_token": token.group(1)})
    return session


def seed_screenshot_rows(db: Any) -> None:
    """A small, realistic table for the README picture (states written directly: no worker runs here)."""
    db.session.execute(
        db.text(
            "INSERT INTO profiles (name, attributes, created_at) "
            "SELECT 'customer-' || g, '{}', now() FROM generate_series(1, 40) g"
        )
    )
    rows = [
        ("monthly invoices", "failed", None, "sleep", 40, 37, 3, "-50 min", "-48 min", "-41 min"),
        ("price import", "stopped", None, "http", 30, 12, 0, "-40 min", "-39 min", "-36 min"),
        ("address cleanup", "done", None, "http", 25, 25, 0, "-30 min", "-29 min", "-27 min"),
        ("crm sync", "in_progress", 0, "http", 40, 23, 1, "-6 min", "-5 min", None),
        ("newsletter segment", "queued", 1, "noop", 12, 0, 0, "-4 min", None, None),
        ("quarterly report", "queued", 2, "sleep", 30, 0, 0, "-2 min", None, None),
    ]
    errors = {"failed": "3 items failed: timed out after 60 s", "stopped": "stopped by alice"}
    for name, status, position, processor, total, ok, bad, created, started, finished in rows:
        rank = position * 65536 if status == "queued" else None
        db.session.execute(
            db.text(
                "INSERT INTO batches (name, status, queue_rank, processor, parameters, profile_ids, total_items,"
                " succeeded_items, failed_items, created_at, started_at, finished_at, created_by, run_attempts, error)"
                " VALUES (:name, :status, :position, :processor, '{}', ARRAY(SELECT generate_series(1, :total)),"
                " :total, :ok, :bad, now() + CAST(:created AS interval),"
                " now() + CAST(:started AS interval), now() + CAST(:finished AS interval), 'alice', 1, :error)"
            ),
            {
                "name": name,
                "status": status,
                "position": rank,
                "processor": processor,
                "total": total,
                "ok": ok,
                "bad": bad,
                "created": created,
                "started": started,
                "finished": finished,
                "error": errors.get(status),
            },
        )
    db.session.commit()


def fill_batches(db: Any, total: int) -> None:
    """Make the table `total` batches long: terminal ones, plus 100 queued behind what is there."""
    existing = db.session.execute(db.text("SELECT count(*) FROM batches")).scalar_one()
    last = db.session.execute(db.text("SELECT coalesce(max(queue_rank), 0) FROM batches"))
    base = last.scalar_one()
    queued = min(100, max(total - existing, 0))
    db.session.execute(
        db.text(
            "INSERT INTO batches (name, status, queue_rank, processor, parameters, profile_ids, total_items,"
            " succeeded_items, failed_items, created_at, started_at, finished_at, created_by, run_attempts)"
            " SELECT 'bulk-' || g, CASE WHEN g % 10 = 0 THEN 'failed' ELSE 'done' END, NULL, 'noop', '{}',"
            " ARRAY[1], 1, CASE WHEN g % 10 = 0 THEN 0 ELSE 1 END, CASE WHEN g % 10 = 0 THEN 1 ELSE 0 END,"
            " now() - g * interval '1 minute', now() - g * interval '1 minute',"
            " now() - g * interval '1 minute', 'bench', 1"
            " FROM generate_series(1, :count) g"
        ),
        {"count": max(total - existing - queued, 0)},
    )
    db.session.execute(
        db.text(
            "INSERT INTO batches (name, status, queue_rank, processor, parameters, profile_ids, total_items,"
            " succeeded_items, failed_items, created_at, created_by, run_attempts)"
            " SELECT 'waiting-' || g, 'queued', :base + g * 65536, 'noop', '{}', ARRAY[1], 1, 0, 0, now(), 'bench', 0"
            " FROM generate_series(1, :count) g"
        ),
        {"base": base, "count": queued},
    )
    db.session.commit()
    db.session.execute(db.text("ANALYZE batches"))
    db.session.commit()


def time_requests(
    session: requests.Session, url: str, count: int, headers: dict[str, str] | None = None
) -> list[float]:
    session.get(url, headers=headers)  # warm
    timings = []
    for _ in range(count):
        started = time.perf_counter()
        response = session.get(url, headers=headers)
        timings.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, response.status_code
    return timings


def measure_live(page: Any, app: Any, samples: int, commits: list[float]) -> list[float]:
    """Queue a batch, then cancel it, alternately; each time from commit to the row's new text in the DOM."""
    from app.extensions import db
    from app.services import queue_manager
    from app.services.queue_manager import NewBatch

    latencies = []
    with app.app_context():
        profile_id = db.session.execute(db.text("SELECT min(id) FROM profiles")).scalar_one()
        db.session.rollback()
        for index in range(samples):
            if index % 2 == 0:
                new = NewBatch(name=f"live-{index}", processor="noop", parameters={}, profile_ids=[profile_id])
                pending_id = db.session.execute(db.text("SELECT nextval('batches_id_seq')")).scalar_one()
                db.session.execute(db.text("SELECT setval('batches_id_seq', :v, false)"), {"v": pending_id})
                db.session.commit()
                selector, text = f'tr[data-batch-id="{pending_id}"] td.batch-status', "queued"
                page.evaluate(WATCH_JS, [selector, text])
                commits.clear()
                batch, _ = queue_manager.enqueue(new)
                assert batch.id == pending_id
            else:
                selector, text = f'tr[data-batch-id="{pending_id}"] td.batch-status', "cancelled"
                page.evaluate(WATCH_JS, [selector, text])
                commits.clear()
                queue_manager.cancel(pending_id, "bench")
            committed_at = commits[0]
            page.wait_for_function("() => window.__seen !== null", timeout=10_000)
            seen_at = page.evaluate("window.__seen")
            latencies.append(seen_at - committed_at)
            time.sleep(0.15)
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=60)
    parser.add_argument("--batches", type=int, default=10_000)
    parser.add_argument("--screenshot", default="", help="save a PNG of the table with a running and a queued batch")
    args = parser.parse_args()

    env = bench_environment(BENCH_DB, BENCH_REDIS_DB, CHANNEL, SECRET_KEY="bench-live")
    from sqlalchemy import event
    from sqlalchemy.orm import Session

    from app import create_app
    from app.extensions import db
    from app.models import Role
    from app.services import accounts

    app = create_app()
    commits: list[float] = []
    # The moment a change is in the database: stamped when its transaction commits.
    event.listen(Session, "after_commit", lambda _session: commits.append(time.time() * 1000))
    with app.app_context():
        accounts.create_user(USER, PASSWORD, Role.OPERATOR)
        seed_screenshot_rows(db)
        # Paused: the measured batches are queued and cancelled, never dispatched (no worker runs here).
        db.session.execute(
            db.text(
                "INSERT INTO queue_state (id, paused, paused_by) VALUES (1, true, 'bench')"
                " ON CONFLICT (id) DO UPDATE SET paused = true"
            )
        )
        db.session.commit()

    from playwright.sync_api import sync_playwright

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    web = start_web(env, port)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 820})
            page.goto(f"{url}/login")
            page.fill("input[name=username]", USER)
            page.fill("input[name=password]", PASSWORD)
            page.click("button[type=submit]")
            page.wait_for_url("**/batches")
            page.wait_for_selector("body[data-live=sse]")
            if args.screenshot:
                with app.app_context():
                    db.session.execute(db.text("UPDATE queue_state SET paused = false, paused_by = NULL"))
                    # A worker's record fresh for the picture's few seconds: no worker runs here.
                    db.session.execute(
                        db.text(
                            "INSERT INTO service_processes (name, kind, host, pid, pool, concurrency, queues,"
                            " started_at, last_seen_at) VALUES ('celery@screenshot', 'worker', 'screenshot', 1,"
                            " 'prefork', 3, ARRAY['batches', 'control'], now(), now() + interval '1 minute')"
                        )
                    )
                    db.session.commit()
                page.reload()
                page.wait_for_selector("body[data-live=sse]")
                Path(args.screenshot).parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=args.screenshot)
                print(f"screenshot: {args.screenshot}")
                with app.app_context():
                    db.session.execute(db.text("UPDATE queue_state SET paused = true, paused_by = 'bench'"))
                    db.session.execute(db.text("DELETE FROM service_processes WHERE name = 'celery@screenshot'"))
                    db.session.commit()
                page.reload()
                page.wait_for_selector("body[data-live=sse]")
            live = measure_live(page, app, args.samples, commits)
            browser.close()
        with app.app_context():
            fill_batches(db, args.batches)
            count = db.session.execute(db.text("SELECT count(*) FROM batches")).scalar_one()
        session = signed_in_session(url)
        full = time_requests(session, f"{url}/batches", 50)
        fragment = time_requests(session, f"{url}/batches", 50, headers={"HX-Request": "true"})
        deep = time_requests(session, f"{url}/batches?page=150", 30)
        filtered = time_requests(session, f"{url}/batches?status=failed", 30)
    finally:
        web.terminate()
        web.wait(timeout=30)

    print(f"commit -> row changed in Chromium (SSE, gunicorn gevent x2): {summary(live)}")
    print(f"GET /batches, {count} batches, full page:                    {summary(full)}")
    print(f"GET /batches, {count} batches, live fragment (HX-Request):   {summary(fragment)}")
    print(f"GET /batches?page=150, {count} batches:                      {summary(deep)}")
    print(f"GET /batches?status=failed, {count} batches:                 {summary(filtered)}")
    print("targets: live p50 < 100 ms; table page < 150 ms")
    live_p50, page_p50 = percentile(live, 0.5), percentile(full, 0.5)
    record("live", "commit -> row changed in the open page, p50", live_p50, "ms", target="< 100 ms", met=live_p50 < 100)
    record("live", f"table's first page, {count:,} batches, p50", page_p50, "ms", target="< 150 ms", met=page_p50 < 150)


if __name__ == "__main__":
    main()
