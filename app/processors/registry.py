"""The named processors a batch can use."""

from __future__ import annotations

import importlib
from collections.abc import Iterable

from app.processors.base import ITEM_TIMEOUT_MAX, ITEM_TIMEOUT_MIN, Processor

_processors: dict[str, Processor] = {}


def register(processor: Processor) -> Processor:
    """Make a processor available by its name (a later registration replaces an earlier one)."""
    _check_item_timeout(processor)
    _processors[processor.name] = processor
    return processor


def _check_item_timeout(processor: Processor) -> None:
    """Refuse a declared item time limit that no batch could have, at start rather than mid-batch."""
    limit = getattr(processor, "item_timeout", None)
    if limit is None:
        return
    is_number = isinstance(limit, int | float) and not isinstance(limit, bool)
    if not is_number or not ITEM_TIMEOUT_MIN <= limit <= ITEM_TIMEOUT_MAX:
        raise ValueError(
            f"processor {processor.name!r}: item_timeout must be a number of seconds"
            f" from {ITEM_TIMEOUT_MIN} to {ITEM_TIMEOUT_MAX}, not {limit!r}"
        )


def get(name: str) -> Processor | None:
    """Return the processor called `name`, or None."""
    return _processors.get(name)


def names() -> list[str]:
    """Return the registered processors' names, sorted."""
    return sorted(_processors)


def load_modules(modules: Iterable[str]) -> None:
    """Import the modules named in PROCESSOR_MODULES; importing them registers their processors."""
    for module in modules:
        importlib.import_module(module)
