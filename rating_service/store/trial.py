"""A contract's trial announcements: `contract.trial_ending` and `contract.trial_converted`.

Each is one outbox row per contract (its dedupe key names the contract), so a retried or
replayed trial workflow announces each once.
"""

from __future__ import annotations

import asyncpg

from rating_service.outbox.topics import Topic, TrialEvent
from rating_service.store.effects import write_outbox


class TrialStore:
    """Writes a contract's trial announcements to the outbox."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def announce(
        self, tenant_id: str, topic: Topic, contract_id: str, event: TrialEvent
    ) -> None:
        """Write the announcement once per contract and topic."""
        async with self._pool.acquire() as conn, conn.transaction():
            await write_outbox(
                conn, tenant_id, topic, topic.dedupe_key(tenant_id, contract_id), event
            )
