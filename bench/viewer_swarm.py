"""Simulated table viewers for bench.viewers, in a process of their own (gevent patches everything here).

Each viewer does what app.js does on the table page: it holds the live stream (`/live/events`) and, on
every hint, re-fetches the table region (`GET /batches` with `HX-Request`), at most one fetch in flight,
hints that arrive meanwhile folding into one more; a fetch starts at least the table's `data-live-gap`
after the one before started, and a progress-only one `data-live-item-gap` after the one before ended
(both read from the page, as app.js reads them). It notes the queued count each fetched region shows,
with the time.

    python -m bench.viewer_swarm URL COOKIES_JSON COUNT SECONDS

prints `ready` once every stream is open, then, when each viewer's region shows the queue empty and
nothing running (or SECONDS pass), one JSON line per viewer: [[unix time, queued count], ...].
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import json  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import gevent  # noqa: E402
import requests  # noqa: E402
from gevent.event import Event  # noqa: E402

QUEUED = re.compile(r"(\d+) queued")
HTMX = {"HX-Request": "true"}


def page_gaps(url: str, cookies: dict[str, str]) -> tuple[float, float]:
    """The table page's refresh gaps (seconds): any refresh, a progress-only one; app.js's defaults else."""
    page = requests.get(f"{url}/batches", cookies=cookies, timeout=60).text
    body = re.search(r"<body[^>]*>", page)
    assert body is not None, page[:300]

    def attribute(name: str, default_ms: float) -> float:
        found = re.search(rf'{name}="(\d+)"', body.group(0))
        return (float(found.group(1)) if found else default_ms) / 1000

    return attribute("data-live-gap", 0), attribute("data-live-item-gap", 300)


class Viewer:
    def __init__(self, url: str, cookies: dict[str, str], deadline: float, gaps: tuple[float, float]) -> None:
        self.url = url
        self.gap, self.item_gap = gaps
        self.session = requests.Session()
        self.session.cookies.update(cookies)
        self.deadline = deadline
        self.seen: list[tuple[float, int]] = []
        self.last_id = ""  # the newest hint's id, sent with each fetch as app.js sends it
        self.wanted = Event()
        self.item_only = True
        self.connected = Event()
        self.finished = Event()

    def listen(self) -> None:
        """The live stream: each hint asks for one more fetch."""
        while not self.finished.is_set() and time.time() < self.deadline:
            with self.session.get(f"{self.url}/live/events", stream=True, timeout=30) as stream:
                assert stream.status_code == 200, f"stream refused: {stream.status_code}"
                self.connected.set()
                for line in stream.iter_lines():
                    if self.finished.is_set():
                        return
                    if line.startswith(b"id:"):
                        self.last_id = line[3:].strip().decode()
                    if line.startswith(b"data:"):
                        if json.loads(line[5:]).get("kind") != "item":
                            self.item_only = False
                        self.wanted.set()

    def fetch(self) -> None:
        """One fetch at a time, as the page does, each waiting out the gaps after the one before."""
        last_start = last_done = 0.0
        while not self.finished.is_set() and time.time() < self.deadline:
            if not self.wanted.wait(timeout=1.0):
                continue
            now = time.time()
            pause = max(last_done + self.item_gap - now if self.item_only else 0.0, last_start + self.gap - now)
            if pause > 0:
                gevent.sleep(pause)
            self.wanted.clear()
            self.item_only = True
            last_start = time.time()
            told = {"X-Live-Event-Id": self.last_id} if self.last_id else {}
            body = self.session.get(f"{self.url}/batches", headers={**HTMX, **told}, timeout=60).text
            last_done = time.time()
            queued = QUEUED.search(body)
            assert queued is not None, body[:300]
            self.seen.append((time.time(), int(queued.group(1))))
            if int(queued.group(1)) == 0 and "running:" not in body:
                self.finished.set()


def main() -> None:
    url, cookies, count, seconds = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    gaps = page_gaps(url, cookies)
    viewers = [Viewer(url, cookies, time.time() + seconds, gaps) for _ in range(count)]
    for viewer in viewers:
        gevent.spawn(viewer.listen)
    for viewer in viewers:
        viewer.connected.wait(timeout=60)
    fetchers = [gevent.spawn(viewer.fetch) for viewer in viewers]
    for viewer in viewers:
        viewer.wanted.set()  # the page as first loaded
    print("ready", flush=True)
    gevent.joinall(fetchers)
    for viewer in viewers:
        print(json.dumps(viewer.seen), flush=True)


if __name__ == "__main__":
    main()
