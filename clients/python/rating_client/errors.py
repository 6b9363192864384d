"""What a refused call means, for callers: the server's status details as typed exceptions.

The server answers every refusal with a google.rpc.Status in the trailing metadata: an ErrorInfo
(`reason`, `domain` = ERROR_DOMAIN, `metadata`) and, for bad input, a BadRequest naming the fields.
`typed_error` turns that into one of the exceptions below, so callers write
`except InsufficientCredit:` instead of parsing strings.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import grpc
from google.rpc import error_details_pb2, status_pb2
from grpc import aio

ERROR_DOMAIN = "rating.v1"
"""The ErrorInfo domain of every refusal the service gives."""

STATUS_DETAILS_KEY = "grpc-status-details-bin"
"""The trailing-metadata key that carries the google.rpc.Status."""

RETRYABLE = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ABORTED, grpc.StatusCode.DEADLINE_EXCEEDED}
)


class RatingError(Exception):
    """A refused call: its status code, ErrorInfo reason, message, field violations and the
    preconditions that failed."""

    def __init__(
        self,
        code: grpc.StatusCode,
        reason: str,
        message: str,
        fields: Mapping[str, str],
        metadata: Mapping[str, str],
        preconditions: Sequence[str] = (),
    ) -> None:
        super().__init__(f"{code.name} {reason}: {message}")
        self.code = code
        self.reason = reason
        self.message = message
        self.fields = dict(fields)
        self.metadata = dict(metadata)
        self.preconditions = list(preconditions)
        """What a FAILED_PRECONDITION found wrong (its PreconditionFailure descriptions)."""


class InvalidRequest(RatingError):
    """INVALID_ARGUMENT: `fields` names what to fix."""


class NotFoundError(RatingError):
    """NOT_FOUND."""


class IdempotencyKeyMismatch(RatingError):
    """ALREADY_EXISTS: the id was used before with another payload."""


class InsufficientCredit(RatingError):
    """FAILED_PRECONDITION INSUFFICIENT_CREDIT: the pools cannot cover it and policy is block."""


class ContractSuspended(RatingError):
    """FAILED_PRECONDITION CONTRACT_SUSPENDED."""


class RatingRefused(RatingError):
    """Another FAILED_PRECONDITION (no contract in force, closed period, ...)."""


class SpendCapExceeded(RatingError):
    """RESOURCE_EXHAUSTED SPEND_CAP_EXCEEDED."""


class RequestTooLarge(RatingError):
    """RESOURCE_EXHAUSTED MESSAGE_TOO_LARGE: the request is over the server's size limit."""


class NotAllowed(RatingError):
    """UNAUTHENTICATED or PERMISSION_DENIED."""


class Unavailable(RatingError):
    """Still UNAVAILABLE, ABORTED or DEADLINE_EXCEEDED after every retry."""


_BY_REASON: dict[str, type[RatingError]] = {
    "INSUFFICIENT_CREDIT": InsufficientCredit,
    "CONTRACT_SUSPENDED": ContractSuspended,
    "SPEND_CAP_EXCEEDED": SpendCapExceeded,
    "IDEMPOTENCY_KEY_MISMATCH": IdempotencyKeyMismatch,
    "MESSAGE_TOO_LARGE": RequestTooLarge,
}
_BY_CODE: dict[grpc.StatusCode, type[RatingError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidRequest,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.ALREADY_EXISTS: IdempotencyKeyMismatch,
    grpc.StatusCode.FAILED_PRECONDITION: RatingRefused,
    grpc.StatusCode.RESOURCE_EXHAUSTED: SpendCapExceeded,
    grpc.StatusCode.UNAUTHENTICATED: NotAllowed,
    grpc.StatusCode.PERMISSION_DENIED: NotAllowed,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.ABORTED: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: Unavailable,
}


def typed_error(error: aio.AioRpcError) -> RatingError:
    """The typed exception for a failed call."""
    status = decode_rich_status(error.trailing_metadata())
    return _typed(error.code(), error.details() or "", status)


def status_error(status: status_pb2.Status) -> RatingError:
    """The typed exception for a google.rpc.Status, such as a streamed event's error."""
    return _typed(_CODES.get(status.code, grpc.StatusCode.UNKNOWN), status.message, status)


def _typed(code: grpc.StatusCode, message: str, status: status_pb2.Status | None) -> RatingError:
    info = None if status is None else error_info(status)
    reason = "" if info is None else info.reason
    cls = _BY_REASON.get(reason) or _BY_CODE.get(code, RatingError)
    return cls(
        code,
        reason,
        message,
        {} if status is None else field_violations(status),
        {} if info is None else dict(info.metadata),
        [] if status is None else precondition_failures(status),
    )


_CODES = {code.value[0]: code for code in grpc.StatusCode}


def decode_rich_status(trailing_metadata: object) -> status_pb2.Status | None:
    """The google.rpc.Status carried in a failed call's trailing metadata, if any."""
    for key, value in trailing_metadata or ():  # type: ignore[attr-defined]
        if key == STATUS_DETAILS_KEY:
            return status_pb2.Status.FromString(value)
    return None


def error_info(status: status_pb2.Status) -> error_details_pb2.ErrorInfo | None:
    """The ErrorInfo detail of a status."""
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    return None


def field_violations(status: status_pb2.Status) -> dict[str, str]:
    """field -> description for the BadRequest detail of a status."""
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            return {v.field: v.description for v in bad.field_violations}
    return {}


def precondition_failures(status: status_pb2.Status) -> list[str]:
    """The descriptions of the PreconditionFailure detail of a status, in order."""
    for detail in status.details:
        if detail.Is(error_details_pb2.PreconditionFailure.DESCRIPTOR):
            failure = error_details_pb2.PreconditionFailure()
            detail.Unpack(failure)
            return [v.description for v in failure.violations]
    return []
