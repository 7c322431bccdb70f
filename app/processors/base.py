"""What a processor is: a named handler for one profile of a batch, with a parameter schema."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from marshmallow import Schema

# The item time limits a batch may ask for, and a processor may declare, in seconds.
ITEM_TIMEOUT_MIN = 1
ITEM_TIMEOUT_MAX = 86400


class ItemFailed(Exception):
    """Raised by a processor to fail the current item with a message."""


class StopRequested(Exception):
    """Raised by a processor that noticed the batch is stopping; the item goes back to pending."""


@dataclass(frozen=True)
class ProfileData:
    """The profile as a processor sees it (a plain value, no database session)."""

    id: int
    name: str
    attributes: dict[str, Any]


@dataclass(frozen=True)
class ItemKey:
    """Which item a call is for, and which attempt at it (1 for the first).

    Items run at least once: an item interrupted by a worker's death or a
    shutdown runs again from its start. A processor whose effects must happen
    once hands `idempotency_key` to the system it changes (an Idempotency-Key
    header, a unique column): it is the same for every attempt at the item.
    """

    batch_id: int
    profile_id: int
    attempt: int

    @property
    def idempotency_key(self) -> str:
        return f"batchq-{self.batch_id}-{self.profile_id}"


class RunContext(Protocol):
    """What the runner offers a processor while it works on an item."""

    batch_id: int
    item: ItemKey

    def stop_requested(self) -> bool:
        """Tell whether the batch is stopping; long work should check it at least every second."""

    def wait(self, seconds: float) -> bool:
        """Sleep up to `seconds`; return True at once if a stop arrives."""

    def log(self, message: str, level: str = "info") -> None:
        """Add a line to the batch's log."""


class Processor(Protocol):
    """A processor: `name`, a marshmallow `schema` for parameters, and `process`.

    It may also declare `item_timeout`, the seconds one item may take with it
    (ITEM_TIMEOUT_MIN..ITEM_TIMEOUT_MAX), for batches that don't set their own;
    without it they get ITEM_TIMEOUT_DEFAULT. Not declared here as an attribute,
    because most processors have none and a protocol member would make it
    required. Past the limit the item's context reports a stop; a processor
    that doesn't let go within a few seconds has its process ended.
    """

    name: str
    description: str
    schema: type[Schema]

    def process(self, profile: ProfileData, parameters: dict[str, Any], ctx: RunContext) -> Any:
        """Handle one profile; return a JSON-able result or raise ItemFailed / StopRequested."""
