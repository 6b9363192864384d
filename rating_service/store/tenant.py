"""Tenants, API keys and the audit log in PostgreSQL."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Row, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from rating_service.core.auth import ApiKey, Role, Tenant
from rating_service.core.contracts.rate_limits import rate_limit_from_dict, rate_limit_to_dict
from rating_service.core.errors import AlreadyExists, InvalidArgument, NotFound
from rating_service.core.ids import new_id
from rating_service.store.schema import api_keys, audit_log, tenants


class TenantStore:
    """Reads and writes tenants and their API keys; every write is audited in its transaction."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def create_tenant(self, name: str, actor: str) -> Tenant:
        """Create a tenant with a unique name."""
        name = name.strip()
        if not name or len(name) > 200:
            raise InvalidArgument.of_field("name", "a tenant needs a name of 1 to 200 characters")
        tenant_id = new_id("tnt")
        async with self._engine.begin() as conn:
            try:
                row = (
                    await conn.execute(
                        insert(tenants).values(tenant_id=tenant_id, name=name).returning(*tenants.c)
                    )
                ).one()
            except IntegrityError as exc:
                raise AlreadyExists(
                    f"a tenant named {name!r} already exists", reason="TENANT_EXISTS"
                ) from exc
            await _audit(conn, tenant_id, actor, "tenant.create", tenant_id, {"name": name})
        return _tenant(row)

    async def tenant(self, tenant_id: str) -> Tenant:
        """The tenant with this id."""
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(select(tenants).where(tenants.c.tenant_id == tenant_id))
            ).one_or_none()
        if row is None:
            raise NotFound(f"no tenant {tenant_id}", reason="TENANT_NOT_FOUND")
        return _tenant(row)

    async def tenant_by_name(self, name: str) -> Tenant | None:
        """The tenant with this name, if there is one."""
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(tenants).where(tenants.c.name == name))).one_or_none()
        return None if row is None else _tenant(row)

    async def find(self, name_or_id: str) -> Tenant:
        """The tenant with this name, or else this id (what operators type on the command line)."""
        return await self.tenant_by_name(name_or_id) or await self.tenant(name_or_id)

    async def list_tenants(self) -> list[Tenant]:
        """Every tenant, oldest first."""
        async with self._engine.connect() as conn:
            rows = (await conn.execute(select(tenants).order_by(tenants.c.tenant_id))).all()
        return [_tenant(r) for r in rows]

    async def add_key(self, key: ApiKey, actor: str) -> None:
        """Store a newly issued key (its hash only)."""
        limit = None if key.rate_limit is None else rate_limit_to_dict(key.rate_limit)
        async with self._engine.begin() as conn:
            try:
                await conn.execute(
                    insert(api_keys).values(
                        key_id=key.key_id,
                        tenant_id=key.tenant_id,
                        role=key.role.value,
                        name=key.name,
                        secret_hash=key.secret_hash,
                        created_at=key.created_at,
                        rate_limit=limit,
                    )
                )
            except IntegrityError as exc:
                raise NotFound(f"no tenant {key.tenant_id}", reason="TENANT_NOT_FOUND") from exc
            await _audit(
                conn,
                key.tenant_id,
                actor,
                "api_key.create",
                key.key_id,
                {"role": key.role.value, "name": key.name}
                | (
                    {}
                    if key.rate_limit is None
                    else {"rate_limit": rate_limit_to_dict(key.rate_limit)}
                ),
            )

    async def key(self, key_id: str) -> ApiKey | None:
        """The key with this id, whichever tenant it belongs to (for authentication)."""
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(select(api_keys).where(api_keys.c.key_id == key_id))
            ).one_or_none()
        return None if row is None else _key(row)

    async def list_keys(
        self,
        tenant_id: str,
        include_revoked: bool,
        *,
        after: str | None = None,
        limit: int | None = None,
    ) -> list[ApiKey]:
        """The tenant's keys by id, from past `after` (at most `limit`)."""
        query = select(api_keys).where(api_keys.c.tenant_id == tenant_id)
        if not include_revoked:
            query = query.where(api_keys.c.revoked_at.is_(None))
        if after is not None:
            query = query.where(api_keys.c.key_id > after)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query.order_by(api_keys.c.key_id).limit(limit))).all()
        return [_key(r) for r in rows]

    async def revoke_key(self, key_id: str, at: datetime, actor: str) -> ApiKey:
        """Revoke a key; revoking a revoked key keeps its first revocation time."""
        async with self._engine.begin() as conn:
            row = (
                await conn.execute(
                    update(api_keys)
                    .where(api_keys.c.key_id == key_id, api_keys.c.revoked_at.is_(None))
                    .values(revoked_at=at)
                    .returning(*api_keys.c)
                )
            ).one_or_none()
            if row is not None:
                await _audit(conn, row.tenant_id, actor, "api_key.revoke", key_id, {})
                return _key(row)
        existing = await self.key(key_id)
        if existing is None:
            raise NotFound(f"no API key {key_id}", reason="API_KEY_NOT_FOUND")
        return existing


async def _audit(
    conn: AsyncConnection,
    tenant_id: str,
    actor: str,
    action: str,
    subject: str,
    details: dict[str, Any],
) -> None:
    await conn.execute(
        insert(audit_log).values(
            tenant_id=tenant_id, actor=actor, action=action, subject=subject, details=details
        )
    )


def _tenant(row: Row[Any]) -> Tenant:
    return Tenant(row.tenant_id, row.name, row.created_at)


def _key(row: Row[Any]) -> ApiKey:
    return ApiKey(
        row.key_id,
        row.tenant_id,
        Role(row.role),
        row.name,
        bytes(row.secret_hash),
        row.created_at,
        row.revoked_at,
        None if row.rate_limit is None else rate_limit_from_dict(row.rate_limit),
    )
