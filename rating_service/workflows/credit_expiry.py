"""CreditExpiryWorkflow: warn before a credit pool expires, then move what is left to breakage.

One per pool with an expiry, started by the `commitment.added` outbox row written with the
pool (id `expiry/<tenant>/<pool>`, so a second delivery is harmless). It sleeps until
`expires_at − warning` and writes `expiry.warning`, sleeps until `expires_at`, then asks the
`expire_pool` activity until the pool may go (see `services.credit_expiry`): the invoice
of its last period finalized, holds resolved, a renewal's rollover done. The move itself is one
transfer under `expiry:<pool>`, so retries and replays never move money twice. Long waits
continue as new, so the history stays short.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from temporalio import activity, workflow
from temporalio.client import Client

with workflow.unsafe.imports_passed_through():
    from rating_service.core.contracts.pools import CommitmentKind
    from rating_service.core.money import format_decimal
    from rating_service.outbox.dispatcher import Handler, OutboxRow
    from rating_service.outbox.topics import CommitmentAdded, CommitmentEnded
    from rating_service.services.credit_expiry import CreditExpiry, ExpiryState
    from rating_service.workflows.common import (
        POLLS_PER_RUN,
        SETTLEMENT_RETRIES,
        STEP_TIMEOUT,
        domain_errors_are_final,
        sleep_until,
        start_once,
    )


@dataclass(frozen=True)
class CreditExpiryInput:
    """The pool, when it expires (ISO-8601), the warning lead and the poll interval (seconds).

    `past_warning` is set when a run continues as new after the warning's moment.
    """

    tenant_id: str
    contract_id: str
    pool_id: str
    expires_at: str
    warning_seconds: float
    poll_seconds: float
    past_warning: bool = False


@dataclass(frozen=True)
class PoolRef:
    """A contract's pool."""

    tenant_id: str
    contract_id: str
    pool_id: str


@dataclass(frozen=True)
class ExpiryResult:
    """Where the expiry stands (an `ExpiryState`), and the amount in breakage once expired."""

    state: str
    amount: str = "0"


def expiry_workflow_id(tenant_id: str, pool_id: str) -> str:
    """The pool's expiry workflow id: starting it twice is harmless."""
    return f"expiry/{tenant_id}/{pool_id}"


class ExpiryActivities:
    """The credit expiry activities, bound to one CreditExpiry."""

    def __init__(self, expiry: CreditExpiry) -> None:
        self._expiry = expiry

    @activity.defn(name="warn_expiry")
    @domain_errors_are_final
    async def warn(self, pool: PoolRef) -> bool:
        """Write the pool's `expiry.warning` once; False when it has nothing left to lose."""
        return await self._expiry.warn(pool.tenant_id, pool.contract_id, pool.pool_id)

    @activity.defn(name="expire_pool")
    @domain_errors_are_final
    async def expire(self, pool: PoolRef) -> ExpiryResult:
        """Move what is left to breakage if it may go now, or say what it waits for."""
        outcome = await self._expiry.expire(pool.tenant_id, pool.contract_id, pool.pool_id)
        return ExpiryResult(str(outcome.state), format_decimal(outcome.amount))

    def all(self) -> list[Callable[..., Awaitable[object]]]:
        """Every activity, for the worker to register."""
        return [self.warn, self.expire]


@workflow.defn(name="CreditExpiry")
class CreditExpiryWorkflow:
    """Warn of, then carry out, one pool's expiry; `state` says what it is waiting for."""

    def __init__(self) -> None:
        self._state = "starting"

    @workflow.query
    def state(self) -> str:
        """What the expiry is doing or waiting for (an `ExpiryState` once it has expired)."""
        return self._state

    @workflow.run
    async def run(self, expiry: CreditExpiryInput) -> ExpiryResult:
        """Warn, wait for the expiry, expire; return the final state and the amount."""
        pool = PoolRef(expiry.tenant_id, expiry.contract_id, expiry.pool_id)
        expires_at = datetime.fromisoformat(expiry.expires_at)
        warn_at = expires_at - timedelta(seconds=expiry.warning_seconds)
        # A pool granted inside its warning window is not warned of: its grant says when it ends.
        if not expiry.past_warning and workflow.now() < warn_at:
            self._state = "waiting_to_warn"
            await sleep_until(warn_at)
            self._state = "warning"
            await workflow.execute_activity_method(
                ExpiryActivities.warn,
                pool,
                start_to_close_timeout=STEP_TIMEOUT,
                retry_policy=SETTLEMENT_RETRIES,
            )
        self._state = "waiting_for_expiry"
        await sleep_until(expires_at)
        for _ in range(POLLS_PER_RUN):
            result = await workflow.execute_activity_method(
                ExpiryActivities.expire,
                pool,
                start_to_close_timeout=STEP_TIMEOUT,
                retry_policy=SETTLEMENT_RETRIES,
            )
            self._state = result.state
            if ExpiryState(result.state).is_final:
                return result
            if workflow.info().is_continue_as_new_suggested():
                break
            await workflow.sleep(expiry.poll_seconds)
        workflow.continue_as_new(replace(expiry, past_warning=True))


def start_ended_expiry(
    client: Client, task_queue: str, warning_seconds: float, poll_seconds: float
) -> Handler:
    """Start the expiry of a pool an amendment ended early (its own run: the pool's first
    expiry, if it had one, still waits for the old end and then finds the pool expired)."""

    async def start(row: OutboxRow) -> None:
        ended = row.payload_as(CommitmentEnded)
        pool_id = ended["pool_id"]
        await start_once(
            client,
            CreditExpiryWorkflow.run,
            CreditExpiryInput(
                row.tenant_id,
                ended["contract_id"],
                pool_id,
                ended["expires_at"],
                warning_seconds,
                poll_seconds,
            ),
            workflow_id=f"{expiry_workflow_id(row.tenant_id, pool_id)}/ended",
            task_queue=task_queue,
        )

    return start


def start_expiry(
    client: Client, task_queue: str, warning_seconds: float, poll_seconds: float
) -> Handler:
    """Start a new pool's expiry, when it has one (once: the id is the pool's)."""

    async def start(row: OutboxRow) -> None:
        added = row.payload_as(CommitmentAdded)
        expires_at = added.get("expires_at")
        # A postpaid commit holds no balance: there is nothing to expire.
        if expires_at is None or added.get("kind") == CommitmentKind.POSTPAID_COMMIT:
            return
        pool_id = added["pool_id"]
        await start_once(
            client,
            CreditExpiryWorkflow.run,
            CreditExpiryInput(
                row.tenant_id,
                added["contract_id"],
                pool_id,
                expires_at,
                warning_seconds,
                poll_seconds,
            ),
            workflow_id=expiry_workflow_id(row.tenant_id, pool_id),
            task_queue=task_queue,
        )

    return start
