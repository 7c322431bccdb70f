"""Secrets kept under the var directory: generated once, then read back, readable by us only."""

from __future__ import annotations

from pathlib import Path

from app.embedded.servers import ensure_secret


def test_secrets_are_generated_once(tmp_path: Path) -> None:
    calls: list[int] = []

    def factory() -> str:
        calls.append(1)
        return "admin:s3cret"

    assert ensure_secret(tmp_path, "flower_auth", factory) == "admin:s3cret"
    assert ensure_secret(tmp_path, "flower_auth", lambda: "other") == "admin:s3cret"
    assert calls == [1]
    assert (tmp_path / "flower_auth").stat().st_mode & 0o077 == 0
