"""AutoRechargeWorkflow: buy credit when the prepaid balance crosses below the threshold.

Started from the `auto_recharge` outbox row the crossing debit wrote. Its id is the contract's
(`recharge/<tenant>/<contract>`), so at most one recharge is in flight per contract: a crossing
while one runs finds it running and adds nothing. Each charge attempt is an idempotent
activity; after the last failure auto-recharge is switched off, and notifications say so.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta

from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.common import RetryPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from rating_service.outbox.dispatcher import Handler, OutboxRow
    from rating_service.outbox.topics import AutoRechargeDue
    from rating_service.services.recharge import AutoRecharging, ChargeAttempt
    from rating_service.workflows.common import (
        STEP_RETRIES,
        STEP_TIMEOUT,
        domain_errors_are_final,
        start_once,
    )

CHARGE_TIMEOUT = timedelta(seconds=30)
CHARGE_RETRIES = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(seconds=10),
    maximum_attempts=3,
)
"""A gateway that never answers counts as one failed attempt; the same key is retried first."""


@dataclass(frozen=True)
class RechargeRequest:
    """A recharge asked for by the debit of event `trigger` on a contract."""

    tenant_id: str
    contract_id: str
    trigger: str


@dataclass(frozen=True)
class RechargeSchedule:
    """The recharge begun, and how hard to try: attempts, seconds between them."""

    recharge_id: str
    max_attempts: int
    retry_seconds: float


@dataclass(frozen=True)
class RechargeCharge:
    """Charge attempt `attempt` of a recharge."""

    tenant_id: str
    recharge_id: str
    attempt: int


def recharge_workflow_id(tenant_id: str, contract_id: str) -> str:
    """The contract's recharge workflow id: one in flight per contract."""
    return f"recharge/{tenant_id}/{contract_id}"


class RechargeActivities:
    """The auto-recharge activities, bound to one AutoRecharging."""

    def __init__(self, recharging: AutoRecharging) -> None:
        self._recharging = recharging

    @activity.defn(name="begin_recharge")
    @domain_errors_are_final
    async def begin(self, request: RechargeRequest) -> RechargeSchedule | None:
        """Record the recharge; None when auto-recharge is off (or nothing can be charged)."""
        plan = await self._recharging.begin(request.tenant_id, request.contract_id, request.trigger)
        if plan is None:
            return None
        return RechargeSchedule(plan.recharge_id, plan.max_attempts, plan.retry_seconds)

    @activity.defn(name="charge_recharge")
    @domain_errors_are_final
    async def charge(self, request: RechargeCharge) -> ChargeAttempt:
        """Charge attempt n; on success the paid credit pool is granted."""
        return await self._recharging.charge(
            request.tenant_id, request.recharge_id, request.attempt
        )

    @activity.defn(name="give_up_recharge")
    @domain_errors_are_final
    async def give_up(self, request: RechargeCharge) -> None:
        """Mark the recharge failed and switch auto-recharge off."""
        await self._recharging.give_up(request.tenant_id, request.recharge_id)

    def all(self) -> list[Callable[..., Awaitable[object]]]:
        """Every activity, for the worker to register."""
        return [self.begin, self.charge, self.give_up]


@workflow.defn(name="AutoRecharge")
class AutoRechargeWorkflow:
    """Charge, retry by the contract's policy, grant on success or switch off after the last try."""

    @workflow.run
    async def run(self, request: RechargeRequest) -> str:
        """Return "succeeded", "failed", or "skipped" when auto-recharge is off."""
        plan = await workflow.execute_activity_method(
            RechargeActivities.begin,
            request,
            start_to_close_timeout=STEP_TIMEOUT,
            retry_policy=STEP_RETRIES,
        )
        if plan is None:
            return "skipped"
        for attempt in range(1, plan.max_attempts + 1):
            charge = RechargeCharge(request.tenant_id, plan.recharge_id, attempt)
            try:
                result = await workflow.execute_activity_method(
                    RechargeActivities.charge,
                    charge,
                    start_to_close_timeout=CHARGE_TIMEOUT,
                    retry_policy=CHARGE_RETRIES,
                )
            except ActivityError as error:
                workflow.logger.warning("recharge attempt %d gave up: %s", attempt, error.cause)
                result = ChargeAttempt(False, decline_code="gateway_timeout")
            if result.succeeded:
                return "succeeded"
            if attempt < plan.max_attempts:
                await workflow.sleep(plan.retry_seconds)
        await workflow.execute_activity_method(
            RechargeActivities.give_up,
            RechargeCharge(request.tenant_id, plan.recharge_id, plan.max_attempts),
            start_to_close_timeout=STEP_TIMEOUT,
            retry_policy=STEP_RETRIES,
        )
        return "failed"


def start_recharge(client: Client, task_queue: str) -> Handler:
    """Start the contract's recharge, unless one is in flight (then this crossing is absorbed)."""

    async def start(row: OutboxRow) -> None:
        due = row.payload_as(AutoRechargeDue)
        tenant_id, contract_id = row.tenant_id, due["contract_id"]
        await start_once(
            client,
            AutoRechargeWorkflow.run,
            RechargeRequest(tenant_id, contract_id, due["event_id"]),
            workflow_id=recharge_workflow_id(tenant_id, contract_id),
            task_queue=task_queue,
            reuse=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        )

    return start
