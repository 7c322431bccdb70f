"""One render of the live table per change, shared by every open page of this web process.

Many people keep the table open, and every committed change makes each open page re-fetch the table
region at once. Rendered per request, N viewers cost N renders of the same rows (about 40 ms each with
10,000 batches), and past a few dozen viewers the pages fall seconds behind while short batches run back
to back. The region is the same for every viewer with the same role and filters: its one per-user part,
the CSRF token, stays out of it (the page's `<meta name="csrf-token">`, added to a form as it is
submitted by app.js). So this process renders it once and hands the same HTML to every request that may
use it; requests that arrive during a render wait for that render instead of starting their own.

A render may serve a request when it began no earlier than the newest hint the request knew of (the
hint counter is read before the database, so such a render saw every change the request was told
about) and is younger than `max_age`: a hint lost in Redis costs at most that much staleness, as the
page's polling would. Correctness still comes from re-reading the database, never from the cache.
The waiting reasons in the table turn on the service's health too, which moves no hint: the caller
keys its renders by the health watcher's generation (app/live/health_watch.py), so a render from
before the workers left or came back never serves a request made after.
A `max_age` of 0 turns sharing off (bench.viewers measures against that).

While changes come faster than renders (short batches back to back: a hundred hints a second), a
render for every newer hint kept the process rendering back to back, 50 rows about 50 ms each, and
every viewer's fetch queued behind them. So a key renders at most once per `min_gap` (0.2 s): a
request told of a newer change waits out the rest of the gap, then takes the next render with every
other request that came meanwhile. The table's pages re-fetch at most twice a second anyway.
"""

from __future__ import annotations

import gzip
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

# Requests of different keys (roles, filters) render side by side; one key renders one at a time.
_LOCK_STRIPES = 64
# zlib's speed/size middle: 200 KB of table in about 2 ms, once per render.
GZIP_LEVEL = 6


@dataclass
class Render:
    body: str
    # The newest hint id when the render began reading, and when that was (the clock's time).
    event_id: int
    began_at: float
    _gzipped: bytes | None = field(default=None, repr=False)

    @property
    def gzipped(self) -> bytes:
        """The body compressed, once for every viewer that takes it.

        The region is about 200 KB for 50 rows and compresses 20 to 1; sent as it is to each of
        200 viewers at every change, its bytes were most of what the process and the pages spent.
        """
        if self._gzipped is None:  # two viewers may both compress it: the same bytes
            self._gzipped = gzip.compress(self.body.encode(), compresslevel=GZIP_LEVEL, mtime=0)
        return self._gzipped


class SharedRenders:
    """The latest render of each key, reused by any request it is fresh enough for."""

    def __init__(
        self,
        max_age: float = 1.0,
        max_keys: int = 256,
        min_gap: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        self.max_age = max_age
        self.min_gap = min_gap
        self._clock = clock
        # Looked up at each call unless given: gevent's patched sleep when the web process runs on it.
        self._sleep = sleep or (lambda seconds: time.sleep(seconds))
        self.max_keys = max_keys
        self.renders_done = 0
        self._latest: OrderedDict[Hashable, Render] = OrderedDict()
        self._guard = threading.Lock()
        self._stripes = [threading.Lock() for _ in range(_LOCK_STRIPES)]

    def get(
        self,
        key: Hashable,
        known_event_id: int,
        current_event_id: Callable[[], int],
        render: Callable[[], str],
    ) -> Render:
        """The region for `key`, as of `known_event_id` or later: a shared render, or a new one."""
        if self.max_age <= 0:  # sharing turned off: every request renders its own
            return Render(render(), known_event_id, self._clock())
        reusable = self._reusable(key, known_event_id)
        if reusable is not None:
            return reusable
        with self._stripes[hash(key) % _LOCK_STRIPES]:
            # Whoever held the lock may have just rendered what this request needs.
            reusable = self._reusable(key, known_event_id)
            if reusable is not None:
                return reusable
            with self._guard:
                latest = self._latest.get(key)
            if latest is not None and (wait := latest.began_at + self.min_gap - self._clock()) > 0:
                self._sleep(wait)  # holding the key's lock: those who come meanwhile take this render too
            began_at = self._clock()
            event_id = current_event_id()
            fresh = Render(render(), event_id, began_at)
            self._keep(key, fresh)
            return fresh

    def _reusable(self, key: Hashable, known_event_id: int) -> Render | None:
        with self._guard:
            latest = self._latest.get(key)
        if latest is None or latest.event_id < known_event_id:
            return None
        if self._clock() - latest.began_at > self.max_age:
            return None
        return latest

    def _keep(self, key: Hashable, latest: Render) -> None:
        with self._guard:
            self.renders_done += 1
            self._latest[key] = latest
            self._latest.move_to_end(key)
            while len(self._latest) > self.max_keys:
                self._latest.popitem(last=False)
