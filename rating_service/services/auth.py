"""The key ring: authenticates bearer tokens (from memory when it can) and manages keys."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from rating_service.core.auth import (
    ApiKey,
    Caller,
    IssuedKey,
    Role,
    issue_key,
    parse_token,
    verify,
)
from rating_service.core.contracts.rate_limits import RateLimit
from rating_service.core.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unauthenticated,
)
from rating_service.core.portal import (
    PortalGrant,
    grant_portal,
    sign_portal_token,
    verify_portal_token,
)
from rating_service.store.tenant import TenantStore

AUTH_CACHE_KEYS = 10_000
"""Most API keys a process keeps in memory; past it, the least recently used one goes."""


@dataclass(frozen=True, slots=True)
class CachedKey:
    """A key as read from the store (None: no such key), and when to stop trusting that read."""

    key: ApiKey | None
    expires_at: float


class KeyCache:
    """Recently read API keys: each trusted `ttl_seconds` from its read, at most `capacity` kept.

    Full, it evicts the least recently used key, one at a time: callers whose keys stay in
    memory never all fall through to the database together.
    """

    def __init__(
        self, capacity: int, ttl_seconds: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._capacity = capacity
        self._ttl_seconds = ttl_seconds
        self._clock = clock
        self._entries: OrderedDict[str, CachedKey] = OrderedDict()  # least recently used first

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key_id: str) -> CachedKey | None:
        """The key read within the TTL (now the most recently used), or None: read it again."""
        entry = self._entries.get(key_id)
        if entry is None:
            return None
        if self._clock() >= entry.expires_at:
            del self._entries[key_id]
            return None
        self._entries.move_to_end(key_id)
        return entry

    def put(self, key_id: str, key: ApiKey | None) -> None:
        """Remember a read, evicting the least recently used key if that overfills the cache."""
        if self._ttl_seconds <= 0:
            return  # trusted for no time: nothing worth keeping
        self._entries[key_id] = CachedKey(key, self._clock() + self._ttl_seconds)
        self._entries.move_to_end(key_id)
        if len(self._entries) > self._capacity:
            self._entries.popitem(last=False)

    def discard(self, key_id: str) -> None:
        """Forget a key (revoked here: this replica stops trusting it at once)."""
        self._entries.pop(key_id, None)


PORTAL_SCHEME = "Portal "
"""`authorization: Portal <token>`: the console's credential for one customer's portal pages."""


@dataclass(frozen=True, slots=True)
class PortalLink:
    """A portal token just signed, and what it grants."""

    token: str
    grant: PortalGrant


class KeyRing:
    """Turns `authorization` headers into callers and issues / revokes keys within a tenant."""

    def __init__(
        self,
        store: TenantStore,
        cache_seconds: float,
        cache_capacity: int = AUTH_CACHE_KEYS,
        clock: Callable[[], float] = time.monotonic,
        portal_secret: str = "",
    ) -> None:
        self._store = store
        self._portal_secret = portal_secret
        # A key revoked on another replica is trusted at most `cache_seconds` longer here,
        # which keeps the hot path free of key lookups.
        self._cache = KeyCache(cache_capacity, cache_seconds, clock)

    async def authenticate(self, authorization: str | None) -> Caller:
        """The caller a bearer token (or a `Portal <token>` link) proves, or Unauthenticated."""
        if authorization is not None and authorization.startswith(PORTAL_SCHEME):
            return self._portal_caller(authorization.removeprefix(PORTAL_SCHEME).strip())
        key_id, secret = parse_token(authorization)
        cached = self._cache.get(key_id)
        if cached is not None:
            key = cached.key
        else:
            key = await self._store.key(key_id)
            self._cache.put(key_id, key)
        return verify(key, secret)

    def open_portal(self, caller: Caller, customer_id: str, lifetime: timedelta) -> PortalLink:
        """A signed link to `customer_id`'s portal in the caller's tenant, for `lifetime`."""
        if not self._portal_secret:
            raise FailedPrecondition(
                "portal links are off: the server has no RATING_PORTAL_SECRET",
                reason="PORTAL_DISABLED",
            )
        grant = grant_portal(caller.tenant_id, customer_id, datetime.now(UTC), lifetime)
        return PortalLink(sign_portal_token(self._portal_secret, grant), grant)

    def _portal_caller(self, token: str) -> Caller:
        if not self._portal_secret:
            raise Unauthenticated("portal links are off on this server", reason="PORTAL_DISABLED")
        grant = verify_portal_token(self._portal_secret, token, datetime.now(UTC))
        return Caller(
            grant.tenant_id,
            f"portal:{grant.customer_id}",
            Role.PORTAL,
            customer_id=grant.customer_id,
        )

    async def issue(
        self, caller: Caller, role: Role, name: str, rate_limit: RateLimit | None = None
    ) -> IssuedKey:
        """A new key for the caller's tenant; the token is returned once, never stored."""
        issued = issue_key(caller.tenant_id, role, name, datetime.now(UTC), rate_limit)
        await self._store.add_key(issued.key, actor=caller.key_id)
        return issued

    async def keys(
        self,
        caller: Caller,
        include_revoked: bool,
        *,
        after: str | None = None,
        limit: int | None = None,
    ) -> list[ApiKey]:
        """The caller's tenant's keys by id, from past `after` (at most `limit`)."""
        return await self._store.list_keys(
            caller.tenant_id, include_revoked, after=after, limit=limit
        )

    async def revoke(self, caller: Caller, key_id: str) -> ApiKey:
        """Revoke one of the caller's tenant's keys (idempotent)."""
        if not key_id:
            raise InvalidArgument.of_field("key_id", "required")
        key = await self._store.key(key_id)
        if key is None:
            raise NotFound(f"no API key {key_id}", reason="API_KEY_NOT_FOUND")
        caller.require_tenant(key.tenant_id)
        revoked = await self._store.revoke_key(key_id, datetime.now(UTC), actor=caller.key_id)
        self._cache.discard(key_id)
        return revoked
