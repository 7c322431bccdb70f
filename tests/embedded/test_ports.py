"""Port choice: the previous port while it is free, another one only after losing a port race."""

from __future__ import annotations

import socket

from app.embedded.ports import start_on_free_port

TAKEN = ("already in use",)


def test_start_on_free_port_keeps_the_preferred_port_while_free() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        preferred = probe.getsockname()[1]
    tried: list[int] = []
    assert start_on_free_port(preferred, lambda port: tried.append(port), TAKEN) is None
    assert tried == [preferred]


def test_start_on_free_port_moves_away_from_a_busy_preferred_port() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        busy = holder.getsockname()[1]
        tried: list[int] = []
        assert start_on_free_port(busy, lambda port: tried.append(port), TAKEN) is None
    assert len(tried) == 1 and tried[0] != busy


def test_start_on_free_port_retries_only_when_the_port_was_taken() -> None:
    errors = iter(["bind: already in use", None])
    assert start_on_free_port(None, lambda _port: next(errors), TAKEN) is None

    tried: list[int] = []

    def broken(port: int) -> str:
        tried.append(port)
        return "bad config"

    assert start_on_free_port(None, broken, TAKEN) == "bad config"
    assert len(tried) == 1


def test_start_on_free_port_gives_up_after_three_lost_races() -> None:
    tried: list[int] = []

    def always_taken(port: int) -> str:
        tried.append(port)
        return f"port {port} already in use"

    assert start_on_free_port(None, always_taken, TAKEN) == f"port {tried[-1]} already in use"
    assert len(tried) == 3
