"""SharedRenders: one render per key and change, however many viewers ask at once."""

from __future__ import annotations

import threading

from app.live.shared_render import SharedRenders

VIEWERS = 20


def test_viewers_asking_at_once_share_one_render() -> None:
    renders = SharedRenders(max_age=60)
    release = threading.Event()
    started = threading.Barrier(VIEWERS + 1)
    bodies: list[str] = []

    def render() -> str:
        release.wait(10)
        return "table"

    def viewer() -> None:
        started.wait(10)
        bodies.append(renders.get("key", 5, lambda: 5, render).body)

    threads = [threading.Thread(target=viewer) for _ in range(VIEWERS)]
    for thread in threads:
        thread.start()
    started.wait(10)
    release.set()
    for thread in threads:
        thread.join(10)
    assert bodies == ["table"] * VIEWERS
    assert renders.renders_done == 1


def test_a_viewer_told_of_a_newer_change_gets_a_new_render() -> None:
    renders = SharedRenders(max_age=60)
    seen = iter(["before", "after"])
    assert renders.get("key", 1, lambda: 1, lambda: next(seen)).body == "before"
    assert renders.get("key", 1, lambda: 1, lambda: "unused").body == "before"
    # The render began at hint 1: it can't show what hint 2 announced.
    assert renders.get("key", 2, lambda: 2, lambda: next(seen)).body == "after"
    assert renders.renders_done == 2


def test_a_render_older_than_max_age_is_not_handed_out() -> None:
    """A hint lost in Redis leaves the counter where it was: age alone makes the table re-read."""
    clock = [100.0]
    renders = SharedRenders(max_age=1.0, clock=lambda: clock[0])
    assert renders.get("key", 1, lambda: 1, lambda: "first").body == "first"
    clock[0] += 0.9
    assert renders.get("key", 1, lambda: 1, lambda: "unused").body == "first"
    clock[0] += 0.2
    assert renders.get("key", 1, lambda: 1, lambda: "second").body == "second"


def test_max_age_zero_turns_sharing_off() -> None:
    renders = SharedRenders(max_age=0)
    assert renders.get("key", 1, lambda: 1, lambda: "first").body == "first"
    assert renders.get("key", 1, lambda: 1, lambda: "second").body == "second"


def test_keys_render_apart_and_the_oldest_are_forgotten() -> None:
    renders = SharedRenders(max_age=60, max_keys=2)
    assert renders.get(("viewer", "/batches"), 1, lambda: 1, lambda: "no controls").body == "no controls"
    assert renders.get(("operator", "/batches"), 1, lambda: 1, lambda: "controls").body == "controls"
    assert renders.get(("operator", "/batches?page=2"), 1, lambda: 1, lambda: "page 2").body == "page 2"
    assert renders.get(("operator", "/batches"), 1, lambda: 1, lambda: "unused").body == "controls"
    assert renders.get(("viewer", "/batches"), 1, lambda: 1, lambda: "again").body == "again"


def test_a_key_renders_at_most_once_per_its_gap() -> None:
    """Changes faster than renders kept the process rendering back to back: the next render waits out the gap."""
    clock = [100.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(round(seconds, 3))
        clock[0] += seconds

    renders = SharedRenders(max_age=60, min_gap=0.2, clock=lambda: clock[0], sleep=sleep)
    assert renders.get("key", 1, lambda: 1, lambda: "first").body == "first"
    clock[0] += 0.05
    # Told of hint 2, 50 ms after the first render began: it waits the other 150 ms, then renders.
    fresh = renders.get("key", 2, lambda: 2, lambda: "second")
    assert (fresh.body, slept, fresh.began_at) == ("second", [0.15], 100.2)
    clock[0] += 0.5
    # Past the gap: at once.
    assert renders.get("key", 3, lambda: 3, lambda: "third").body == "third"
    assert slept == [0.15]
    # Another key has a gap of its own.
    assert renders.get("other", 3, lambda: 3, lambda: "other").body == "other"
    assert slept == [0.15] and renders.renders_done == 4
