"""The key ring: authenticates bearer tokens (from memory when it can) and manages keys."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from rating_service.domain.auth import (
    ApiKey,
    Caller,
    IssuedKey,
    Role,
    issue_key,
    parse_token,
    verify,
)
from rating_service.domain.errors import InvalidArgument, NotFound
from rating_service.store.tenants import TenantStore


class KeyRing:
    """Turns `authorization` headers into callers and issues / revokes keys within a tenant."""

    def __init__(self, store: TenantStore, cache_seconds: float) -> None:
        self._store = store
        self._cache_seconds = cache_seconds
        # key_id -> (stored key, monotonic time it was read); a revoked key is trusted at most
        # `cache_seconds` longer on this replica, which keeps the hot path free of key lookups.
        self._cache: dict[str, tuple[ApiKey | None, float]] = {}

    async def authenticate(self, authorization: str | None) -> Caller:
        """The caller a bearer token proves, or Unauthenticated."""
        key_id, secret = parse_token(authorization)
        cached = self._cache.get(key_id)
        now = time.monotonic()
        if cached is not None and now - cached[1] < self._cache_seconds:
            key = cached[0]
        else:
            key = await self._store.key(key_id)
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[key_id] = (key, now)
        return verify(key, secret)

    async def issue(self, caller: Caller, role: Role, name: str) -> IssuedKey:
        """A new key for the caller's tenant; the token is returned once, never stored."""
        issued = issue_key(caller.tenant_id, role, name, datetime.now(UTC))
        await self._store.add_key(issued.key, actor=caller.key_id)
        return issued

    async def keys(self, caller: Caller, include_revoked: bool) -> list[ApiKey]:
        """The caller's tenant's keys."""
        return await self._store.list_keys(caller.tenant_id, include_revoked)

    async def revoke(self, caller: Caller, key_id: str) -> ApiKey:
        """Revoke one of the caller's tenant's keys (idempotent)."""
        if not key_id:
            raise InvalidArgument.of_field("key_id", "required")
        key = await self._store.key(key_id)
        if key is None:
            raise NotFound(f"no API key {key_id}", reason="API_KEY_NOT_FOUND")
        caller.require_tenant(key.tenant_id)
        revoked = await self._store.revoke_key(key_id, datetime.now(UTC), actor=caller.key_id)
        self._cache.pop(key_id, None)
        return revoked
