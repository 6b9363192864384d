"""The replay log: every replay of an invoice workflow, who asked for it, why, and how it ended."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg


@dataclass(frozen=True, slots=True)
class ReplayRequest:
    """A replay about to be made: what it replays, how, who asks and why."""

    tenant_id: str
    workflow_id: str
    contract_id: str
    billing_date: str
    replayed_run: str
    failed_step: str
    error: str
    mode: str
    reset_to: str | None
    actor: str
    reason: str


@dataclass(frozen=True, slots=True)
class Replay:
    """A logged replay and, once known, its outcome: running, completed, failed or refused."""

    replay_id: int
    request: ReplayRequest
    requested_at: datetime
    outcome: str
    detail: str
    new_run: str | None
    finished_at: datetime | None


class ReplayLog:
    """Writes and reads the `invoice_replays` table."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def started(self, request: ReplayRequest) -> int:
        """Log a replay as running before it is made, so none goes unrecorded; its id."""
        replay_id: int = await self._pool.fetchval(
            "INSERT INTO invoice_replays (tenant_id, workflow_id, contract_id, billing_date,"
            " replayed_run, failed_step, error, mode, reset_to, actor, reason, outcome)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 'running')"
            " RETURNING replay_id",
            request.tenant_id,
            request.workflow_id,
            request.contract_id,
            request.billing_date,
            request.replayed_run,
            request.failed_step,
            request.error,
            request.mode,
            request.reset_to,
            request.actor,
            request.reason,
        )
        return replay_id

    async def made(self, tenant_id: str, replay_id: int, new_run: str) -> None:
        """The new run the replay started."""
        await self._pool.execute(
            "UPDATE invoice_replays SET new_run = $3 WHERE tenant_id = $1 AND replay_id = $2",
            tenant_id,
            replay_id,
            new_run,
        )

    async def ended(self, tenant_id: str, replay_id: int, outcome: str, detail: str) -> None:
        """How a running replay ended (completed, failed, refused); once."""
        await self._pool.execute(
            "UPDATE invoice_replays SET outcome = $3, detail = $4, finished_at = now()"
            " WHERE tenant_id = $1 AND replay_id = $2 AND outcome = 'running'",
            tenant_id,
            replay_id,
            outcome,
            detail,
        )

    async def replay(self, tenant_id: str, replay_id: int) -> Replay | None:
        """One of the tenant's replays, or None."""
        row = await self._pool.fetchrow(
            f"{_REPLAYS} WHERE tenant_id = $1 AND replay_id = $2", tenant_id, replay_id
        )
        return None if row is None else _replay(row)

    async def replays(
        self,
        tenant_id: str,
        workflow_id: str | None = None,
        limit: int = 100,
        *,
        before: int | None = None,
    ) -> list[Replay]:
        """The tenant's replays (of one workflow, if given), latest first, older than `before`."""
        rows = await self._pool.fetch(
            f"{_REPLAYS} WHERE tenant_id = $1 AND ($2::text IS NULL OR workflow_id = $2)"
            " AND ($4::bigint IS NULL OR replay_id < $4) ORDER BY replay_id DESC LIMIT $3",
            tenant_id,
            workflow_id,
            limit,
            before,
        )
        return [_replay(row) for row in rows]


_REPLAYS = (
    "SELECT replay_id, tenant_id, workflow_id, contract_id, billing_date, replayed_run,"
    " failed_step, error, mode, reset_to, actor, reason, requested_at, outcome, detail,"
    " new_run, finished_at FROM invoice_replays"
)


def _replay(row: asyncpg.Record) -> Replay:
    return Replay(
        row["replay_id"],
        ReplayRequest(
            row["tenant_id"],
            row["workflow_id"],
            row["contract_id"],
            row["billing_date"],
            row["replayed_run"],
            row["failed_step"],
            row["error"],
            row["mode"],
            row["reset_to"],
            row["actor"],
            row["reason"],
        ),
        row["requested_at"],
        row["outcome"],
        row["detail"],
        row["new_run"],
        row["finished_at"],
    )
