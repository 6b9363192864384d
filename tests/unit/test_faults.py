"""Which unexpected exceptions are outages (UNAVAILABLE), conflicts (ABORTED) or bugs (INTERNAL)."""

from __future__ import annotations

import errno
import socket

import asyncpg
import grpc
import pytest
import sqlalchemy.exc
from asyncpg.exceptions import _base as asyncpg_client
from sqlalchemy.dialects.postgresql.asyncpg import (
    AsyncAdapt_asyncpg_connection,
    AsyncAdapt_asyncpg_dbapi,
)
from temporalio.service import RPCError, RPCStatusCode

from rating_service.api.errors import status_code
from rating_service.faults import Failure, classify_failure, unexpected_failure

_DBAPI = AsyncAdapt_asyncpg_dbapi(asyncpg)  # type: ignore[no-untyped-call]


def through_sqlalchemy(error: Exception, *, invalidated: bool = False) -> Exception:
    """The exception SQLAlchemy raises for an asyncpg one: its own translation, then its wrapper."""
    try:
        AsyncAdapt_asyncpg_connection._handle_exception_no_connection(_DBAPI, error)
    except Exception as adapted:
        return sqlalchemy.exc.DBAPIError.instance(
            "SELECT 1", None, adapted, _DBAPI.Error, connection_invalidated=invalidated
        )
    raise AssertionError("SQLAlchemy did not translate the error")


def caused_by(error: Exception, cause: Exception) -> Exception:
    """`error` as raised by `raise error from cause`."""
    error.__cause__ = cause
    return error


def missing_file() -> OSError:
    """What opening a file that is not there raises (it names the file)."""
    try:
        open("/nonexistent/rating/template.html")  # noqa: SIM115
    except OSError as error:
        return error
    raise AssertionError("the file exists")


OUTAGE, CONFLICT, BUG = Failure.OUTAGE, Failure.CONFLICT, Failure.BUG


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        # PostgreSQL went away under a query (what asyncpg raises on a fast shutdown).
        (asyncpg.ConnectionDoesNotExistError("connection was closed mid-operation"), OUTAGE),
        (asyncpg.ConnectionFailureError("connection failure"), OUTAGE),
        (asyncpg.ClientCannotConnectError("cannot connect"), OUTAGE),
        (asyncpg.CannotConnectNowError("the database system is starting up"), OUTAGE),
        (asyncpg.AdminShutdownError("terminating connection due to administrator command"), OUTAGE),
        (asyncpg.CrashShutdownError("terminating connection because of crash"), OUTAGE),
        (asyncpg.QueryCanceledError("canceling statement due to statement timeout"), OUTAGE),
        (asyncpg.TooManyConnectionsError("sorry, too many clients already"), OUTAGE),
        # A malformed protocol message is class 08 too, but a bug, not an outage.
        (asyncpg.ProtocolViolationError("invalid message format"), BUG),
        # The client side of a closed connection or pool; misuse of a connection is a bug.
        (asyncpg.InterfaceError("connection is closed"), OUTAGE),
        (asyncpg.InterfaceError("pool is closing"), OUTAGE),
        (asyncpg.InterfaceError("cannot perform operation: another operation is in progress"), BUG),
        # An argument asyncpg could not encode quotes the caller's text, which may say "closed".
        (asyncpg_client.DataError("invalid input for query argument $1: 'closed'"), BUG),
        # Nobody listens: TCP refused, the Unix socket file gone (filename None), DNS, timeouts.
        (ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"), OUTAGE),
        (ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"), OUTAGE),
        (FileNotFoundError(errno.ENOENT, "No such file or directory"), OUTAGE),
        (OSError("Multiple exceptions: [Errno 111] Connect call failed"), OUTAGE),
        (socket.gaierror(socket.EAI_NONAME, "Name or service not known"), OUTAGE),
        (TimeoutError(), OUTAGE),
        # A file the code could not open names itself: a bug or a deployment mistake.
        (missing_file(), BUG),
        # SQLAlchemy's wrappers: judged by what they wrap, or by the connection they invalidated.
        (through_sqlalchemy(asyncpg.InterfaceError("connection closed"), invalidated=True), OUTAGE),
        (through_sqlalchemy(asyncpg.AdminShutdownError("terminating connection")), OUTAGE),
        (through_sqlalchemy(asyncpg.SerializationError("could not serialize access")), CONFLICT),
        (through_sqlalchemy(asyncpg.UndefinedColumnError('column "x" does not exist')), BUG),
        (sqlalchemy.exc.TimeoutError("QueuePool limit of size 4 overflow 4 reached"), OUTAGE),
        # Conflicts that escaped their retry loop: the same request again is safe.
        (asyncpg.SerializationError("could not serialize access"), CONFLICT),
        (asyncpg.DeadlockDetectedError("deadlock detected"), CONFLICT),
        # asyncpg tripping over a connection an outage broke: that connection is lost.
        (asyncpg_client.InternalClientError("cannot switch to state 15"), OUTAGE),
        # A bug that re-raises an outage keeps the outage's meaning through `raise … from`.
        (caused_by(RuntimeError("loading the contract failed"), ConnectionRefusedError()), OUTAGE),
        # Temporal: only an unreachable frontend is an outage.
        (RPCError("connection refused", RPCStatusCode.UNAVAILABLE, b""), OUTAGE),
        (RPCError("workflow not found", RPCStatusCode.NOT_FOUND, b""), BUG),
        (RPCError("bad request", RPCStatusCode.INVALID_ARGUMENT, b""), BUG),
        # Plain bugs.
        (asyncpg.UniqueViolationError("duplicate key value"), BUG),
        (asyncpg.CheckViolationError("new row violates check constraint"), BUG),
        (asyncpg.CharacterNotInRepertoireError("invalid byte sequence: 0x00"), BUG),
        (asyncpg.ProgramLimitExceededError("index row size exceeds maximum"), BUG),
        (KeyError("pool-1"), BUG),
        (ValueError("bad decimal"), BUG),
    ],
    ids=lambda value: value.name if isinstance(value, Failure) else type(value).__name__,
)
def test_each_failure_is_judged_by_what_it_means_for_the_caller(
    error: Exception, expected: Failure
) -> None:
    assert classify_failure(error) is expected


def test_a_cycle_of_causes_ends_as_a_bug() -> None:
    first, second = RuntimeError("a"), RuntimeError("b")
    first.__cause__, second.__cause__ = second, first
    assert classify_failure(first) is BUG


def test_an_exception_raised_while_handling_an_outage_is_still_a_bug() -> None:
    try:
        try:
            raise ConnectionRefusedError()
        except ConnectionRefusedError:
            raise KeyError("typo in the handler")  # noqa: B904 -- the implicit context is the point
    except KeyError as error:
        assert classify_failure(error) is BUG


@pytest.mark.parametrize(
    ("error", "code", "reason"),
    [
        (ConnectionRefusedError(), grpc.StatusCode.UNAVAILABLE, "DEPENDENCY_UNAVAILABLE"),
        (asyncpg.DeadlockDetectedError("deadlock"), grpc.StatusCode.ABORTED, "WRITE_CONFLICT"),
        (KeyError("x"), grpc.StatusCode.INTERNAL, "INTERNAL"),
    ],
)
def test_the_caller_is_told_whether_to_retry_and_given_an_incident(
    error: Exception, code: grpc.StatusCode, reason: str
) -> None:
    answer = unexpected_failure("RateAndDebit", error)
    assert (status_code(answer), answer.reason) == (code, reason)
    assert "incident " in answer.message
    assert ("retry" in answer.message) == (code != grpc.StatusCode.INTERNAL)
    assert "KeyError" not in answer.message and "Connection" not in answer.message
