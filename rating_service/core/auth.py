"""Tenants, roles and API keys: who may call what, independent of transport and storage."""

from __future__ import annotations

import enum
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime

from rating_service.core.contracts.rate_limits import LimitUnit, RateLimit
from rating_service.core.errors import InvalidArgument, PermissionDenied, Unauthenticated
from rating_service.core.ids import new_id


class Role(enum.StrEnum):
    """What an API key may do."""

    RATER = "rater"
    ADMIN = "admin"
    OPS = "ops"
    PORTAL = "portal"
    """A customer's portal link, not a key: reads that one customer's account (no key has it)."""


KEY_ROLES = (Role.RATER, Role.ADMIN, Role.OPS)
"""The roles an API key may have: `portal` belongs to signed portal links alone."""


@dataclass(frozen=True)
class Tenant:
    """A company using the service; every resource belongs to exactly one tenant."""

    tenant_id: str
    name: str
    created_at: datetime


@dataclass(frozen=True)
class ApiKey:
    """A stored API key: its public id, role and the hash of its secret (never the secret)."""

    key_id: str
    tenant_id: str
    role: Role
    name: str
    secret_hash: bytes
    created_at: datetime
    revoked_at: datetime | None = None
    rate_limit: RateLimit | None = None
    """At most this many of the key's events per second, minute or hour (None: no limit)."""

    @property
    def active(self) -> bool:
        """Whether the key still authenticates."""
        return self.revoked_at is None


@dataclass(frozen=True)
class Caller:
    """An authenticated caller: the key it used and the tenant that key belongs to."""

    tenant_id: str
    key_id: str
    role: Role
    rate_limit: RateLimit | None = None
    """The key's own rate limit on the events it sends (None: none)."""
    customer_id: str = ""
    """The one customer a portal caller may read; empty for an API key."""

    def require(self, allowed: frozenset[Role]) -> None:
        """Refuse unless the caller's role is one of `allowed`."""
        if self.role not in allowed:
            names = ", ".join(sorted(r.value for r in allowed))
            raise PermissionDenied(
                f"this call needs the {names} role; the key {self.key_id} has {self.role.value}",
                reason="ROLE_NOT_ALLOWED",
                metadata={"required_roles": names, "role": self.role.value},
            )

    def require_tenant(self, tenant_id: str) -> None:
        """Refuse access to a resource of another tenant."""
        if tenant_id != self.tenant_id:
            raise PermissionDenied(
                "the resource belongs to another tenant", reason="CROSS_TENANT_ACCESS"
            )


@dataclass(frozen=True)
class IssuedKey:
    """A newly issued key: what is stored, and the bearer token shown to the user once."""

    key: ApiKey
    token: str


# Secrets are 256 random bits, so one SHA-256 is enough: a slow password hash would protect nothing
# more and would cost milliseconds on every uncached call.
def hash_secret(secret: str) -> bytes:
    """The stored form of a key's secret."""
    return hashlib.sha256(secret.encode()).digest()


def issue_key(
    tenant_id: str, role: Role, name: str, now: datetime, rate_limit: RateLimit | None = None
) -> IssuedKey:
    """Mint a key: `<key_id>.<secret>` is the token; only the hash of the secret is kept.

    A key's rate limit counts requests (events) only: units are the contract's business.
    """
    if len(name) > 200:
        raise InvalidArgument.of_field("name", "at most 200 characters")
    if rate_limit is not None and rate_limit.unit is not LimitUnit.REQUESTS:
        raise InvalidArgument.of_field("rate_limit.unit", "a key's limit counts requests")
    if rate_limit is not None and (rate_limit.product_key or rate_limit.tag):
        raise InvalidArgument.of_field("rate_limit", "a key's limit covers all its events")
    if role not in KEY_ROLES:
        raise InvalidArgument.of_field("role", "an API key is rater, admin or ops")
    key_id = new_id("key")
    secret = secrets.token_urlsafe(32)
    key = ApiKey(key_id, tenant_id, role, name, hash_secret(secret), now, rate_limit=rate_limit)
    return IssuedKey(key, f"{key_id}.{secret}")


def parse_token(authorization: str | None) -> tuple[str, str]:
    """Split an `authorization: Bearer <key_id>.<secret>` header into key id and secret."""
    if not authorization:
        raise Unauthenticated(
            "missing credentials: send `authorization: Bearer <api key>`", reason="MISSING_API_KEY"
        )
    scheme, _, token = authorization.strip().partition(" ")
    key_id, dot, secret = token.strip().partition(".")
    if scheme.lower() != "bearer" or not dot or not key_id.startswith("key_") or not secret:
        raise Unauthenticated(
            "malformed credentials: expected `Bearer key_<id>.<secret>`", reason="MALFORMED_API_KEY"
        )
    return key_id, secret


def verify(key: ApiKey | None, secret: str) -> Caller:
    """The caller a presented secret proves, or Unauthenticated (same answer for every failure)."""
    if (
        key is None
        or not key.active
        or key.role not in KEY_ROLES
        or not hmac.compare_digest(key.secret_hash, hash_secret(secret))
    ):
        raise Unauthenticated("the API key is unknown or revoked", reason="INVALID_API_KEY")
    return Caller(key.tenant_id, key.key_id, key.role, key.rate_limit)
