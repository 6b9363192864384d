"""What a failed database call means for its caller: an outage, a conflict or a refusal.

An outage (the server is down, restarting, out of connections or resources) and a conflict
(a deadlock, a serialization failure, another writer's committed twin) are worth retrying
unchanged; a refusal (data the database will not store, a broken constraint, a bug of ours)
fails the same way every time, so only the request that caused it may be answered with it.
"""

from __future__ import annotations

import enum

import asyncpg
from asyncpg import exceptions as pg
from asyncpg.exceptions import _base as client


class Fault(enum.Enum):
    """The kind of a database failure, as a caller should treat it."""

    OUTAGE = "outage"
    CONFLICT = "conflict"
    REFUSAL = "refusal"


_OUTAGES: tuple[type[BaseException], ...] = (
    OSError,  # refused, reset or timed-out sockets (TimeoutError is an OSError)
    pg.PostgresConnectionError,  # class 08
    pg.InsufficientResourcesError,  # class 53: too many connections, disk or memory full
    pg.OperatorInterventionError,  # class 57: shutdown, restart, statement timeout
    pg.PostgresSystemError,  # class 58: I/O errors
    pg.ConnectionDoesNotExistError,
)

_CONFLICTS: tuple[type[BaseException], ...] = (
    pg.TransactionRollbackError,  # class 40: serialization failure, deadlock
    pg.LockNotAvailableError,
    pg.UniqueViolationError,  # a concurrent writer committed the same key first
)


def classify(error: BaseException) -> Fault:
    """How a caller should treat this failure of a database call."""
    if isinstance(error, client.DataError):  # an argument asyncpg could not encode
        return Fault.REFUSAL
    if isinstance(error, _OUTAGES):
        return Fault.OUTAGE
    if isinstance(error, asyncpg.InterfaceError) and _is_closed(error):
        return Fault.OUTAGE
    if isinstance(error, _CONFLICTS):
        return Fault.CONFLICT
    return Fault.REFUSAL


def _is_closed(error: asyncpg.InterfaceError) -> bool:
    # asyncpg says so only in words: "connection is closed", "pool is closing", ...
    return "clos" in str(error)
