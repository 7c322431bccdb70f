"""Registering processors: a declared item time limit must be one a batch could have."""

from __future__ import annotations

from typing import Any

import pytest
from marshmallow import Schema

from app.processors import registry


def _processor(**attributes: Any) -> Any:
    return type("Declared", (), {"name": "declared", "description": "", "schema": Schema, **attributes})()


@pytest.fixture(autouse=True)
def _forget_declared(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_processors", dict(registry._processors))


@pytest.mark.parametrize("limit", [None, 1, 90.5, 86400])
def test_register_accepts_no_item_timeout_or_one_within_a_day(limit: float | None) -> None:
    attributes = {} if limit is None else {"item_timeout": limit}
    processor = _processor(**attributes)
    assert registry.register(processor) is processor and registry.get("declared") is processor


@pytest.mark.parametrize("limit", [0, 0.5, -1, 86401, float("nan"), float("inf"), True, "60"])
def test_register_refuses_an_item_timeout_no_batch_could_have(limit: Any) -> None:
    with pytest.raises(ValueError, match="item_timeout"):
        registry.register(_processor(item_timeout=limit))
    assert registry.get("declared") is None
