"""What a transaction announces besides its own rows: the audit entry, the outbox row, and the
NOTIFY that drops rating's cached contracts. Each is written on the changing connection, so it
commits (or not) with the change it describes: no dual writes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

from rating_service.outbox.topics import OutboxPayload, Topic
from rating_service.store.database import Connection

CONTRACTS_CHANNEL = "rating_contracts"
"""NOTIFY channel naming `<tenant_id>:<customer_id>` whose contracts or pools changed."""


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """Who did what to which subject, written in the same transaction as the change."""

    actor: str
    action: str
    subject: str
    details: Mapping[str, object]


async def write_audit(conn: Connection, tenant_id: str, entry: AuditEntry) -> None:
    """Record who did what, with the change."""
    await conn.execute(
        "INSERT INTO audit_log (tenant_id, actor, action, subject, details)"
        " VALUES ($1, $2, $3, $4, $5::jsonb)",
        tenant_id,
        entry.actor,
        entry.action,
        entry.subject,
        json.dumps(dict(entry.details)),
    )


async def write_outbox(
    conn: Connection,
    tenant_id: str,
    topic: Topic,
    dedupe_key: str,
    payload: OutboxPayload,
) -> None:
    """An outbox row for the dispatcher; a second row under the tenant's same key is not written.

    The key is usually `topic.dedupe_key(tenant_id, business key)`.
    """
    await conn.execute(
        "INSERT INTO outbox (tenant_id, topic, dedupe_key, payload)"
        " VALUES ($1, $2, $3, $4::jsonb) ON CONFLICT (tenant_id, dedupe_key) DO NOTHING",
        tenant_id,
        topic,
        dedupe_key,
        json.dumps(dict(payload)),
    )


def notify_payload(tenant_id: str, customer_id: str) -> str:
    """What a `rating_contracts` notification carries (tenant ids hold no colon)."""
    return f"{tenant_id}:{customer_id}"


async def notify_contracts_changed(conn: Connection, tenant_id: str, customer_id: str) -> None:
    """Rating servers drop the customer's cached contracts and pools when this commits."""
    await conn.execute(
        "SELECT pg_notify($1, $2)", CONTRACTS_CHANNEL, notify_payload(tenant_id, customer_id)
    )
