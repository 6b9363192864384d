"""Which unexpected failures are a dependency's outage or a write conflict, and which are bugs.

Asked for every exception that is not a domain error: by the edge (an outage answers
UNAVAILABLE and a conflict ABORTED, both retried by callers with the same ids, which the server
is idempotent on; anything else is a bug and answers INTERNAL), and by the debit engine (which
retries a conflicting batch and splits one that fails otherwise, so that only the event that
caused it is told).
"""

from __future__ import annotations

import enum
import logging
import socket
import uuid
from collections.abc import Iterator

import asyncpg
import sqlalchemy.exc
from asyncpg.exceptions import _base as asyncpg_client
from temporalio.service import RPCError, RPCStatusCode

from rating_service.core.errors import Aborted, DomainError, Unavailable

log = logging.getLogger("rating.faults")


class Failure(enum.Enum):
    """What an unexpected exception means for the caller."""

    OUTAGE = "a dependency cannot be reached now; retry later"
    CONFLICT = "the write conflicted with a concurrent one; retry now"
    BUG = "a bug"


# asyncpg's SQLSTATE classes that mean the server, not the statement, is the problem:
# 08 connection exception, 53 insufficient resources (too many connections, disk full),
# 57 operator intervention (shutdown, crash, "the database system is starting up",
# a statement cancelled by a timeout or an operator).
_POSTGRES_OUTAGES = (
    asyncpg.PostgresConnectionError,
    asyncpg.InsufficientResourcesError,
    asyncpg.OperatorInterventionError,
)
_POSTGRES_CONFLICTS = (asyncpg.SerializationError, asyncpg.DeadlockDetectedError)

# Bounds the walk down a chain of causes (a chain is short; a cycle must not hang the edge).
_MAX_CAUSES = 8


def classify_failure(error: BaseException) -> Failure:
    """The meaning of an exception, judged on it and on the exceptions that caused it."""
    for cause in _causes(error):
        failure = _judge(cause)
        if failure is not None:
            return failure
    return Failure.BUG


def _causes(error: BaseException) -> Iterator[BaseException]:
    """The exception, then what it wraps: SQLAlchemy's `.orig`, then `raise … from` causes.

    `__context__` (an exception raised while handling another) is not followed: a bug in an
    error handler is still a bug.
    """
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen and len(seen) < _MAX_CAUSES:
        seen.add(id(current))
        yield current
        wrapped = getattr(current, "orig", None)
        if isinstance(current, sqlalchemy.exc.DBAPIError) and isinstance(wrapped, BaseException):
            current = wrapped if id(wrapped) not in seen else current.__cause__
        else:
            current = current.__cause__


def _judge(error: BaseException) -> Failure | None:
    """The meaning of this one exception, or None to look at its cause."""
    if isinstance(error, asyncpg_client.InternalClientError):
        # A connection an outage broke mid-operation trips asyncpg's own state machine
        # ("cannot switch to state 15; another operation is in progress"): the connection is
        # lost (the pool terminates it), and a retry on a new one is the answer.
        return Failure.OUTAGE
    if isinstance(error, asyncpg_client.DataError):
        return Failure.BUG  # an argument asyncpg could not encode; its text is the caller's
    if isinstance(error, _POSTGRES_CONFLICTS):
        return Failure.CONFLICT
    if isinstance(error, asyncpg.ProtocolViolationError):
        return Failure.BUG  # class 08 too, but a malformed message is not an outage
    if isinstance(error, _POSTGRES_OUTAGES):
        return Failure.OUTAGE
    if isinstance(error, asyncpg.InterfaceError):
        # The client side of a lost connection or a pool being shut down; the other interface
        # errors ("another operation is in progress") are misuse, a bug.
        message = str(error)
        return Failure.OUTAGE if "closed" in message or "closing" in message else None
    if isinstance(error, sqlalchemy.exc.DBAPIError) and error.connection_invalidated:
        return Failure.OUTAGE
    if isinstance(error, sqlalchemy.exc.TimeoutError):
        return Failure.OUTAGE  # no pooled connection came free in time
    if isinstance(error, RPCError):
        return Failure.OUTAGE if error.status == RPCStatusCode.UNAVAILABLE else None
    if isinstance(error, ConnectionError | TimeoutError | socket.gaierror):
        return Failure.OUTAGE
    if isinstance(error, OSError):
        # A socket error carries no file name (a refused or missing Unix socket is ENOENT,
        # "Multiple exceptions" from a multi-address connect has no errno); a file the
        # code failed to open names it, and that is a bug or a deployment mistake.
        return Failure.OUTAGE if error.filename is None else Failure.BUG
    return None


def unexpected_failure(method: str, error: Exception) -> DomainError:
    """The caller's answer to an exception no domain code raised, logged with an incident id.

    A dependency outage is UNAVAILABLE and a write conflict ABORTED, so callers retry with the
    same ids; anything else is a bug: INTERNAL, with no detail but the incident to quote.
    """
    incident = uuid.uuid4().hex[:12]
    failure = classify_failure(error)
    extra = {"method": method, "incident": incident}
    if failure is Failure.BUG:
        log.error("internal error", exc_info=error, extra=extra)
        return DomainError(
            f"internal error; quote incident {incident} to the operator", reason="INTERNAL"
        )
    # Expected in an outage, so no traceback: one line per call, with what went wrong.
    log.warning(failure.value, extra={**extra, "error": f"{type(error).__name__}: {error}"})
    if failure is Failure.CONFLICT:
        return Aborted(
            f"the write conflicted with a concurrent one; retry the same request "
            f"(incident {incident})",
            reason="WRITE_CONFLICT",
        )
    return Unavailable(
        f"a dependency of the service cannot be reached; retry the same request later "
        f"(incident {incident})",
        reason="DEPENDENCY_UNAVAILABLE",
    )


def shutting_down() -> Unavailable:
    """The answer to a call the server will not finish because it is stopping."""
    return Unavailable(
        "the server is shutting down; retry the same request", reason="SHUTTING_DOWN"
    )
