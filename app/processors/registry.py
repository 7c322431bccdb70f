"""The named processors a batch can use."""

from __future__ import annotations

import importlib
from collections.abc import Iterable

from app.processors.base import Processor

_processors: dict[str, Processor] = {}


def register(processor: Processor) -> Processor:
    """Make a processor available by its name (a later registration replaces an earlier one)."""
    _processors[processor.name] = processor
    return processor


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
