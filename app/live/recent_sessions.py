"""Who a live re-fetch of the table belongs to, reused for up to a second.

At every change each open table page re-fetches the table region at once, and the region itself is
rendered once and shared (app/live/shared_render.py). What was left per fetch was loading the
signed-in user: three round trips to PostgreSQL (the pool's pre-ping among them) and a pooled
connection held meanwhile, about 10 of a fetch's 14 ms; with 200 pages open that is seconds of one
process's time per change. A re-fetch only needs to know the session is still good and which role
it has, and the page's live stream, opened once, already goes on for minutes without asking again.
So for these re-fetches only, a session checked less than `seconds` ago (1 s) is taken as checked: ending a
session (sign-out everywhere, a disabled user, a new password) reaches them within that second, and
every other request still checks it against the database.
`LIVE_REFETCH_SESSION_SECONDS` of 0 checks every re-fetch (bench.viewers' baseline does).

One check per session at a time: when the second runs out, the re-fetches that arrive while a check
of that session is under way wait for its answer instead of each checking too. At 200 open pages,
each expiry otherwise sent every re-fetch in flight to PostgreSQL at once, each holding a pooled
connection meanwhile: a tenth of what the web process spent, and a queue at the pool behind it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class _Check(Generic[T]):
    """A check of one session under way, and what it gave once it ends."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.answered = False  # False once done: the check raised, and each waiter checks for itself
        self.answer: T | None = None


class RecentSessions(Generic[T]):
    """Session id -> what checking it gave, for `seconds`; only positive answers are kept."""

    def __init__(self, seconds: float = 1.0, max_sessions: int = 4096, clock: Callable[[], float] = time.monotonic):
        self.seconds = seconds
        self.max_sessions = max_sessions
        self._clock = clock
        self._checked: dict[str, tuple[float, T]] = {}
        self._under_way: dict[str, _Check[T]] = {}
        self._lock = threading.Lock()

    def get(self, session_id: str, check: Callable[[], T | None]) -> T | None:
        """What `check()` gave for this session less than `seconds` ago, or what it gives now."""
        if self.seconds <= 0:
            return check()
        with self._lock:
            now = self._clock()
            kept = self._checked.get(session_id)
            if kept is not None and now - kept[0] < self.seconds:
                return kept[1]
            other = self._under_way.get(session_id)
            mine: _Check[T] = _Check()
            if other is None:
                self._under_way[session_id] = mine
        if other is not None:  # began after this session's last answer ran out: as good as one of our own
            other.done.wait()
            return other.answer if other.answered else check()
        try:
            mine.answer = check()
            mine.answered = True
        finally:
            with self._lock:
                del self._under_way[session_id]
                if mine.answered:
                    self._keep(session_id, now, mine.answer)
            mine.done.set()
        return mine.answer

    def _keep(self, session_id: str, checked_at: float, answer: T | None) -> None:
        if answer is None:
            self._checked.pop(session_id, None)
            return
        if len(self._checked) >= self.max_sessions:
            self._forget_old(checked_at)
        self._checked[session_id] = (checked_at, answer)

    def clear(self) -> None:
        """Forget every session (tests that start the users over)."""
        with self._lock:
            self._checked.clear()

    def _forget_old(self, now: float) -> None:
        for session_id, (checked_at, _) in list(self._checked.items()):
            if now - checked_at >= self.seconds:
                del self._checked[session_id]
        if len(self._checked) >= self.max_sessions:  # all fresh: a burst of sign-ins; start over
            self._checked.clear()
