"""The outbox dispatcher: delivers rows written with their cause to Temporal, at least once.

Rows are claimed with `FOR UPDATE SKIP LOCKED` (several workers share the work), handed to
their topic's handler, and marked delivered in the same transaction. A crash or an outage of
the database or Temporal leaves them undelivered, to be delivered again; handlers start
workflows under ids derived from business keys, so a second delivery changes nothing.
Topics without a handler stay in the outbox until one is registered
(rating_service/workflows/registry.py); every topic is defined in `rating_service.outbox.topics`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar, cast

import asyncpg

from rating_service.outbox.topics import Topic

log = logging.getLogger("rating.outbox")

P = TypeVar("P", bound=Mapping[str, Any])


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """One outbox row as a handler sees it; `dedupe_key` is its business key, unique."""

    tenant_id: str
    topic: Topic
    dedupe_key: str
    payload: Mapping[str, Any]
    created_at: datetime

    def payload_as(self, payload_type: type[P]) -> P:
        """The payload, as the TypedDict its topic declares (another one raises TypeError)."""
        if self.topic.payload_type is not payload_type:
            raise TypeError(f"{self.topic} rows carry {self.topic.payload_type.__name__}")
        return cast(P, self.payload)


Handler = Callable[[OutboxRow], Awaitable[None]]
"""Delivers one row (idempotently: a row may be delivered more than once)."""


class OutboxDispatcher:
    """Claims undelivered rows of the topics it handles, delivers them, marks them delivered."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        handlers: Mapping[Topic, Sequence[Handler]],
        poll_seconds: float = 1.0,
        batch_size: int = 100,
    ) -> None:
        self._pool = pool
        self._handlers = dict(handlers)
        self._poll_seconds = poll_seconds
        self._batch_size = batch_size

    async def dispatch_once(self) -> int:
        """Deliver one batch; the number of rows delivered."""
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                "SELECT outbox_id, tenant_id, topic, dedupe_key, payload, created_at FROM outbox"
                " WHERE delivered_at IS NULL AND topic = ANY($1::text[])"
                " ORDER BY outbox_id LIMIT $2 FOR UPDATE SKIP LOCKED",
                sorted(self._handlers),
                self._batch_size,
            )
            for row in rows:
                payload = row["payload"]
                if isinstance(payload, str):
                    payload = json.loads(payload)
                topic = Topic(row["topic"])
                claimed = OutboxRow(
                    row["tenant_id"], topic, row["dedupe_key"], payload, row["created_at"]
                )
                for handle in self._handlers[topic]:
                    await handle(claimed)
            if rows:
                await conn.execute(
                    "UPDATE outbox o SET delivered_at = now()"
                    " FROM unnest($1::text[], $2::bigint[]) AS k(t, id)"
                    " WHERE o.tenant_id = k.t AND o.outbox_id = k.id",
                    [row["tenant_id"] for row in rows],
                    [row["outbox_id"] for row in rows],
                )
        return len(rows)

    async def run(self) -> None:
        """Deliver until cancelled; any failure is logged and retried on the next poll."""
        while True:
            try:
                while await self.dispatch_once():
                    pass
            except asyncio.CancelledError:
                raise
            except Exception as error:  # an outage must not end the loop
                log.warning("outbox delivery failed; retrying", extra={"error": str(error)})
            await asyncio.sleep(self._poll_seconds)
