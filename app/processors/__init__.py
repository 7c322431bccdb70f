"""Processors: what a batch does with each profile. Built-ins register on import."""

from app.processors import builtin  # noqa: F401  (registers noop, sleep, http)
from app.processors.base import ItemFailed, ItemKey, ProfileData, RunContext, StopRequested
from app.processors.registry import get, load_modules, names, register

__all__ = [
    "ItemFailed",
    "ItemKey",
    "ProfileData",
    "RunContext",
    "StopRequested",
    "get",
    "load_modules",
    "names",
    "register",
]
