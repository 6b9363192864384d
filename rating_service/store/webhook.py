"""Webhook endpoints and their delivery log in PostgreSQL (tables of migrations 0005, 0007).

An endpoint is never deleted, only disabled: its delivery log refers to it and stays readable.
Adding and disabling one are audited in the same transaction. The log has one row per attempt
to deliver one notification to one endpoint, successful or not.

Signing secrets are stored sealed (`rating_service.core.encryption`), never in plaintext:
`secret_ciphertext` bound to the row's endpoint id, and `secret_key_id`, the key that sealed it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from rating_service.core.encryption import EncryptionKeys, Sealed
from rating_service.core.errors import NotFound
from rating_service.store.effects import AuditEntry, write_audit


@dataclass(frozen=True, slots=True)
class WebhookEndpoint:
    """Where a tenant's notifications go; `topics` None means every topic. No secret here."""

    endpoint_id: str
    tenant_id: str
    url: str
    topics: tuple[str, ...] | None
    created_at: datetime
    disabled_at: datetime | None

    @property
    def enabled(self) -> bool:
        """Still receiving notifications."""
        return self.disabled_at is None


@dataclass(frozen=True, slots=True)
class DeliveryTarget:
    """What sending to an enabled endpoint needs: its URL and signing secret."""

    url: str
    secret: str


@dataclass(frozen=True, slots=True)
class DeliveryAttempt:
    """One attempt to deliver a notification to an endpoint, as logged."""

    endpoint_id: str
    event_id: str
    topic: str
    attempt: int
    status_code: int | None
    error: str | None
    succeeded: bool
    at: datetime | None = None
    """When it was logged (None before it is)."""


@dataclass(frozen=True)
class RaisedNotification:
    """What an outbox row raised: its topic, when, and its payload."""

    topic: str
    created_at: datetime
    data: dict[str, Any]


class WebhookStore:
    """Reads and writes webhook endpoints and delivery attempts over an asyncpg pool."""

    def __init__(self, pool: asyncpg.Pool, keys: EncryptionKeys) -> None:
        self._pool = pool
        self._keys = keys

    @property
    def keys(self) -> EncryptionKeys:
        """The keys that seal and open the endpoints' signing secrets."""
        return self._keys

    async def add_endpoint(
        self,
        tenant_id: str,
        endpoint_id: str,
        url: str,
        topics: Sequence[str] | None,
        secret: str,
        actor: str,
    ) -> WebhookEndpoint:
        """Store a new endpoint with its signing secret, sealed under the current key; audited."""
        sealed = self._keys.seal(secret, secret_context(endpoint_id))
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "INSERT INTO webhook_endpoints (endpoint_id, tenant_id, url, topics,"
                " secret_ciphertext, secret_key_id)"
                f" VALUES ($1, $2, $3, $4, $5, $6) RETURNING {_ENDPOINT_COLUMNS}",
                endpoint_id,
                tenant_id,
                url,
                None if topics is None else list(topics),
                sealed.ciphertext,
                sealed.key_id,
            )
            assert row is not None, "INSERT … RETURNING returns the row"
            endpoint = _endpoint(row)
            details = {"url": url, "topics": endpoint.topics}
            entry = AuditEntry(actor, "webhook.add", endpoint.endpoint_id, details)
            await write_audit(conn, tenant_id, entry)
        return endpoint

    async def endpoints(self, tenant_id: str) -> list[WebhookEndpoint]:
        """The tenant's endpoints, enabled and disabled, oldest first."""
        rows = await self._pool.fetch(
            f"SELECT {_ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE tenant_id = $1"
            " ORDER BY created_at, endpoint_id",
            tenant_id,
        )
        return [_endpoint(row) for row in rows]

    async def disable_endpoint(
        self, tenant_id: str, endpoint_id: str, actor: str
    ) -> WebhookEndpoint:
        """Stop sending to an endpoint (once: disabling it again changes nothing); audited."""
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "UPDATE webhook_endpoints SET disabled_at = coalesce(disabled_at, now())"
                f" WHERE tenant_id = $1 AND endpoint_id = $2 RETURNING {_ENDPOINT_COLUMNS}",
                tenant_id,
                endpoint_id,
            )
            if row is None:
                raise NotFound(
                    f"no webhook endpoint {endpoint_id!r}",
                    reason="WEBHOOK_ENDPOINT_NOT_FOUND",
                    metadata={"endpoint_id": endpoint_id},
                )
            endpoint = _endpoint(row)
            entry = AuditEntry(actor, "webhook.disable", endpoint.endpoint_id, {})
            await write_audit(conn, tenant_id, entry)
        return endpoint

    async def subscribed_endpoint_ids(self, tenant_id: str, topic: str) -> list[str]:
        """The tenant's enabled endpoints that take `topic` (all topics, or it among theirs)."""
        rows = await self._pool.fetch(
            "SELECT endpoint_id FROM webhook_endpoints WHERE tenant_id = $1"
            " AND disabled_at IS NULL AND (topics IS NULL OR $2 = ANY(topics))"
            " ORDER BY created_at, endpoint_id",
            tenant_id,
            topic,
        )
        return [row["endpoint_id"] for row in rows]

    async def raised(self, tenant_id: str, event_id: str) -> RaisedNotification | None:
        """The outbox row a notification was raised by (its id is the row's dedupe key)."""
        row = await self._pool.fetchrow(
            "SELECT topic, payload, created_at FROM outbox"
            " WHERE tenant_id = $1 AND dedupe_key = $2",
            tenant_id,
            event_id,
        )
        if row is None:
            return None
        payload = row["payload"]
        data = json.loads(payload) if isinstance(payload, str) else dict(payload)
        return RaisedNotification(row["topic"], row["created_at"], data)

    async def delivery_target(self, tenant_id: str, endpoint_id: str) -> DeliveryTarget | None:
        """The URL and secret of an enabled endpoint; None once it is disabled (or unknown)."""
        row = await self._pool.fetchrow(
            "SELECT url, secret_ciphertext, secret_key_id FROM webhook_endpoints"
            " WHERE tenant_id = $1 AND endpoint_id = $2 AND disabled_at IS NULL",
            tenant_id,
            endpoint_id,
        )
        if row is None:
            return None
        sealed = Sealed(row["secret_key_id"], row["secret_ciphertext"])
        return DeliveryTarget(row["url"], self._keys.open(sealed, secret_context(endpoint_id)))

    async def secrets_per_key(self) -> dict[str, int]:
        """How many endpoints' secrets (every tenant's, disabled too) each key id sealed."""
        rows = await self._pool.fetch(
            "SELECT secret_key_id, count(*) AS secrets FROM webhook_endpoints"
            " GROUP BY secret_key_id ORDER BY secret_key_id"
        )
        return {row["secret_key_id"]: row["secrets"] for row in rows}

    async def reseal_secrets(self, batch_size: int = 100) -> dict[str, int]:
        """Reseal every secret not under the current key with it; how many, per old key id.

        Batches of `batch_size` rows, each its own transaction, so a large table is not locked
        at once and an interrupted run resumes where it stopped.
        """
        current = self._keys.require_current_id()
        moved: dict[str, int] = {}
        while True:
            async with self._pool.acquire() as conn, conn.transaction():
                # Key order, so two operators resealing at once wait rather than deadlock.
                rows = await conn.fetch(
                    "SELECT tenant_id, endpoint_id, secret_ciphertext, secret_key_id"
                    " FROM webhook_endpoints WHERE secret_key_id <> $1"
                    " ORDER BY tenant_id, endpoint_id LIMIT $2 FOR UPDATE",
                    current,
                    batch_size,
                )
                for row in rows:
                    old = Sealed(row["secret_key_id"], row["secret_ciphertext"])
                    new = self._keys.reseal(old, secret_context(row["endpoint_id"]))
                    await conn.execute(
                        "UPDATE webhook_endpoints SET secret_ciphertext = $3, secret_key_id = $4"
                        " WHERE tenant_id = $1 AND endpoint_id = $2",
                        row["tenant_id"],
                        row["endpoint_id"],
                        new.ciphertext,
                        new.key_id,
                    )
                    moved[old.key_id] = moved.get(old.key_id, 0) + 1
            if len(rows) < batch_size:
                return moved

    async def was_delivered(self, tenant_id: str, event_id: str, endpoint_id: str) -> bool:
        """Whether an attempt to deliver this event to this endpoint has succeeded."""
        found = await self._pool.fetchval(
            "SELECT EXISTS (SELECT 1 FROM webhook_deliveries WHERE tenant_id = $1"
            " AND event_id = $2 AND endpoint_id = $3 AND succeeded)",
            tenant_id,
            event_id,
            endpoint_id,
        )
        return bool(found)

    async def record_attempt(self, tenant_id: str, attempt: DeliveryAttempt) -> None:
        """Log one delivery attempt."""
        await self._pool.execute(
            "INSERT INTO webhook_deliveries (tenant_id, endpoint_id, event_id, topic, attempt,"
            " status_code, error, succeeded) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            tenant_id,
            attempt.endpoint_id,
            attempt.event_id,
            attempt.topic,
            attempt.attempt,
            attempt.status_code,
            attempt.error,
            attempt.succeeded,
        )

    async def attempts(
        self, tenant_id: str, event_id: str | None = None, limit: int = 100
    ) -> list[DeliveryAttempt]:
        """The tenant's latest delivery attempts (of one event, if given), oldest first."""
        rows = await self._pool.fetch(
            "SELECT * FROM (SELECT delivery_id, endpoint_id, event_id, topic, attempt,"
            " status_code, error, succeeded, at FROM webhook_deliveries"
            " WHERE tenant_id = $1 AND ($2::text IS NULL OR event_id = $2)"
            " ORDER BY delivery_id DESC LIMIT $3) latest ORDER BY delivery_id",
            tenant_id,
            event_id,
            limit,
        )
        return [
            DeliveryAttempt(
                row["endpoint_id"],
                row["event_id"],
                row["topic"],
                row["attempt"],
                row["status_code"],
                row["error"],
                row["succeeded"],
                row["at"],
            )
            for row in rows
        ]


_ENDPOINT_COLUMNS = "endpoint_id, tenant_id, url, topics, created_at, disabled_at"
"""Every column but the sealed secret, opened only to sign (`delivery_target`)."""


def secret_context(endpoint_id: str) -> bytes:
    """What a secret's seal is bound to: its row, so it does not open when copied to another."""
    return b"webhook_endpoints/" + endpoint_id.encode()


def _endpoint(row: asyncpg.Record) -> WebhookEndpoint:
    topics: Sequence[str] | None = row["topics"]
    return WebhookEndpoint(
        row["endpoint_id"],
        row["tenant_id"],
        row["url"],
        None if topics is None else tuple(topics),
        row["created_at"],
        row["disabled_at"],
    )
