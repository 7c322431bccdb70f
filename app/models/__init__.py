"""The service's tables; import from here."""

from app.models.accounts import ApiToken, Role, User
from app.models.batches import (
    RUNNING_STATUSES,
    Batch,
    BatchItem,
    BatchLog,
    BatchStatus,
    ItemStatus,
)
from app.models.callbacks import CallbackAttempt, CallbackDelivery
from app.models.processes import ServiceProcess
from app.models.profiles import Profile
from app.models.queue_state import QueueState

__all__ = [
    "RUNNING_STATUSES",
    "ApiToken",
    "Batch",
    "BatchItem",
    "BatchLog",
    "BatchStatus",
    "CallbackAttempt",
    "CallbackDelivery",
    "ItemStatus",
    "Profile",
    "QueueState",
    "Role",
    "ServiceProcess",
    "User",
]
