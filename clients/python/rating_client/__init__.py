"""The rating service's typed async client: `RatingClient`, and the exceptions a refusal raises."""

from rating_client.client import RatingClient, usage_event
from rating_client.errors import (
    ContractSuspended,
    IdempotencyKeyMismatch,
    InsufficientCredit,
    InvalidRequest,
    NotAllowed,
    NotFoundError,
    RatingError,
    RatingRefused,
    RequestTooLarge,
    SpendCapExceeded,
    Unavailable,
)
from rating_client.streaming import EventResult

__all__ = [
    "ContractSuspended",
    "EventResult",
    "IdempotencyKeyMismatch",
    "InsufficientCredit",
    "InvalidRequest",
    "NotAllowed",
    "NotFoundError",
    "RatingClient",
    "RatingError",
    "RatingRefused",
    "RequestTooLarge",
    "SpendCapExceeded",
    "Unavailable",
    "usage_event",
]
