"""Idempotency keys: the same key with the same payload is a replay, with another is refused."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from enum import Enum
from typing import Generic, TypeVar

from rating_service.core.errors import AlreadyExists, InvalidArgument
from rating_service.core.ledger.journal import IDEMPOTENCY_KEY_MISMATCH
from rating_service.core.money import ROUNDING_CONTEXT, format_decimal

T = TypeVar("T")


def payload_fingerprint(payload: Mapping[str, object]) -> str:
    """A stable SHA-256 of a request's business content, to compare a retry with the original.

    Decimals compare by value (`"1.50"` and `"1.5"` are the same amount), datetimes by instant
    (in UTC), sets in sorted order, so a retry that spells a value differently is still a replay.
    """
    canonical = json.dumps(_canonical(payload), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _canonical(value: object) -> object:
    if isinstance(value, Mapping):
        return {str(key): _canonical(item) for key, item in value.items()}
    if isinstance(value, bool) or value is None or isinstance(value, int | str):
        return value
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise InvalidArgument.of_field("payload", f"{value} is not a finite amount")
        return {"decimal": format_decimal(value.normalize(ROUNDING_CONTEXT))}
    if isinstance(value, Enum):
        return _canonical(value.value)
    if isinstance(value, datetime):
        if value.utcoffset() is None:
            raise InvalidArgument.of_field("payload", "timestamps must be timezone-aware")
        return {"instant": value.astimezone(UTC).isoformat()}
    if isinstance(value, set | frozenset):
        return sorted((_canonical(item) for item in value), key=repr)
    if isinstance(value, list | tuple):
        return [_canonical(item) for item in value]
    raise InvalidArgument.of_field(
        "payload", f"cannot fingerprint a {type(value).__name__} (floats are never accepted)"
    )


@dataclass(frozen=True, slots=True)
class IdempotentOutcome(Generic[T]):
    """What an idempotency key produced the first time: its payload fingerprint and result."""

    key: str
    fingerprint: str
    result: T


def recall(previous: IdempotentOutcome[T] | None, key: str, fingerprint: str) -> T | None:
    """The original result when `key` was used before with the same payload, else None.

    None means the operation is new and must run. The same key with another payload is refused
    with ALREADY_EXISTS, reason IDEMPOTENCY_KEY_MISMATCH, and changes nothing.
    """
    if previous is None:
        return None
    if previous.key != key:
        raise InvalidArgument.of_field("key", "the stored outcome belongs to another key")
    if previous.fingerprint != fingerprint:
        raise AlreadyExists(
            f"idempotency key {key!r} was already used with a different request",
            reason=IDEMPOTENCY_KEY_MISMATCH,
            metadata={"idempotency_key": key},
        )
    return previous.result
