"""Domain errors: what went wrong in business terms, mapped to gRPC statuses only at the edge."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta


@dataclass(frozen=True)
class FieldViolation:
    """One invalid field of a request, named by its path (e.g. `tiers[2].up_to`)."""

    field: str
    description: str


@dataclass(frozen=True)
class PreconditionViolation:
    """One unmet precondition: its type (e.g. `BALANCE`), subject and a human description."""

    type: str
    subject: str
    description: str


class DomainError(Exception):
    """Base of every error a caller may see; `reason` is the machine-readable ErrorInfo reason."""

    reason: str = "INTERNAL"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason
        self.metadata: dict[str, str] = dict(metadata or {})


class InvalidArgument(DomainError):
    """The request is malformed; `violations` name each offending field."""

    reason = "INVALID_ARGUMENT"

    def __init__(
        self,
        message: str,
        violations: Sequence[FieldViolation] = (),
        *,
        reason: str | None = None,
    ) -> None:
        super().__init__(message, reason=reason)
        self.violations = tuple(violations)

    @classmethod
    def of_field(cls, field_path: str, description: str) -> InvalidArgument:
        """Build the error for a single bad field."""
        return cls(f"{field_path}: {description}", [FieldViolation(field_path, description)])


class NotFound(DomainError):
    """The named resource does not exist (for this tenant)."""

    reason = "NOT_FOUND"


class AlreadyExists(DomainError):
    """The resource exists, or an idempotency key was reused with another payload."""

    reason = "ALREADY_EXISTS"


class FailedPrecondition(DomainError):
    """The state forbids the operation (no credit, suspended contract, closed period)."""

    reason = "FAILED_PRECONDITION"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        violations: Sequence[PreconditionViolation] = (),
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message, reason=reason, metadata=metadata)
        self.violations = tuple(violations)


@dataclass(frozen=True)
class QuotaViolation:
    """One quota a request ran over: what it limits (`subject`) and the limit, in words."""

    subject: str
    description: str


class ResourceExhausted(DomainError):
    """A limit was reached: a spend cap, a size limit, a rate limit.

    `quota_violations` name the quotas run over; `retry_after` says when a retry may pass.
    """

    reason = "RESOURCE_EXHAUSTED"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
        quota_violations: Iterable[QuotaViolation] = (),
        retry_after: timedelta | None = None,
    ) -> None:
        super().__init__(message, reason=reason, metadata=metadata)
        self.quota_violations = tuple(quota_violations)
        self.retry_after = retry_after


class Aborted(DomainError):
    """A concurrent write conflicted with this one; retrying the same request is safe."""

    reason = "ABORTED"


class Unavailable(DomainError):
    """A dependency (PostgreSQL, Temporal) cannot be reached now; retrying later is safe."""

    reason = "UNAVAILABLE"


class Unauthenticated(DomainError):
    """No credentials, or credentials that match no active API key."""

    reason = "UNAUTHENTICATED"


class PermissionDenied(DomainError):
    """The caller is known but may not do this (wrong role, another tenant's resource)."""

    reason = "PERMISSION_DENIED"


@dataclass
class ViolationCollector:
    """Gathers every field violation of a request so the caller sees them all at once."""

    violations: list[FieldViolation] = field(default_factory=list)

    def add(self, field_path: str, description: str) -> None:
        """Record one violation."""
        self.violations.append(FieldViolation(field_path, description))

    def raise_if_any(self, message: str = "the request has invalid fields") -> None:
        """Raise InvalidArgument naming every recorded field, if there is one."""
        if self.violations:
            details = "; ".join(f"{v.field}: {v.description}" for v in self.violations)
            raise InvalidArgument(f"{message}: {details}", self.violations)
