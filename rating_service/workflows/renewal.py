"""RenewalWorkflow: give notice before a term ends, renew or end it, and settle its credit.

One per contract with a term end, started by the `contract.created` outbox row (id
`renewal/<tenant>/<contract>`, so a second delivery is harmless). At `term_end − notice` it
prepares the renewal (the next term's contract and commitments, when the contract auto-renews)
and writes `renewal.upcoming`; from the term end it asks `settle_term` until the final invoice
is finalized and holds are resolved, which rolls prepaid balance over, expires the rest and
ends the contract (see `rating_service.services.renewal`). The next term's own workflows start from
its own `contract.created` row.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import datetime

from temporalio import activity, workflow
from temporalio.client import Client

with workflow.unsafe.imports_passed_through():
    from rating_service.core.money import format_decimal
    from rating_service.outbox.dispatcher import Handler, OutboxRow
    from rating_service.outbox.topics import ContractCreated
    from rating_service.services.renewal import Renewals, TermState
    from rating_service.workflows.common import (
        POLLS_PER_RUN,
        SETTLEMENT_RETRIES,
        STEP_TIMEOUT,
        ContractRef,
        domain_errors_are_final,
        sleep_until,
        start_once,
    )


@dataclass(frozen=True)
class RenewalInput:
    """The contract and the poll interval (seconds) while its settlement waits.

    A run that continues as new after the notice carries what the notice decided in
    `notice_given` and `next_contract_id`.
    """

    tenant_id: str
    contract_id: str
    poll_seconds: float
    notice_given: bool = False
    next_contract_id: str | None = None


@dataclass(frozen=True)
class RenewalDates:
    """When the term ends and when its notice is due (ISO-8601)."""

    term_end: str
    notice_at: str


@dataclass(frozen=True)
class PrepareRequest:
    """Prepare the renewal of a term scheduled to end at `term_end` (ISO-8601)."""

    tenant_id: str
    contract_id: str
    term_end: str


@dataclass(frozen=True)
class RenewalDecision:
    """Whether the term renews, and into which contract."""

    renews: bool
    next_contract_id: str | None


@dataclass(frozen=True)
class SettleRequest:
    """Settle a term, renewing into `next_contract_id` (None: it ends)."""

    tenant_id: str
    contract_id: str
    next_contract_id: str | None


@dataclass(frozen=True)
class SettlementResult:
    """Where the settlement stands (a `TermState`); once settled, the amounts it moved."""

    state: str
    rolled_over: str = "0"
    breakage: str = "0"


def renewal_workflow_id(tenant_id: str, contract_id: str) -> str:
    """The contract's renewal workflow id: starting it twice is harmless."""
    return f"renewal/{tenant_id}/{contract_id}"


class RenewalActivities:
    """The renewal activities, bound to one Renewals."""

    def __init__(self, renewals: Renewals) -> None:
        self._renewals = renewals

    @activity.defn(name="renewal_dates")
    @domain_errors_are_final
    async def dates(self, contract: ContractRef) -> RenewalDates | None:
        """When the term ends and notice is due; None for an evergreen contract."""
        found = await self._renewals.schedule(contract.tenant_id, contract.contract_id)
        if found is None:
            return None
        return RenewalDates(found.term_end.isoformat(), found.notice_at.isoformat())

    @activity.defn(name="prepare_renewal")
    @domain_errors_are_final
    async def prepare(self, request: PrepareRequest) -> RenewalDecision:
        """Arrange the next term when the contract renews; write `renewal.upcoming`."""
        notice = await self._renewals.prepare(
            request.tenant_id, request.contract_id, datetime.fromisoformat(request.term_end)
        )
        return RenewalDecision(notice.renews, notice.next_contract_id)

    @activity.defn(name="settle_term")
    @domain_errors_are_final
    async def settle(self, request: SettleRequest) -> SettlementResult:
        """Roll over, expire the rest and end the contract, once it may be settled."""
        settled = await self._renewals.settle(
            request.tenant_id, request.contract_id, request.next_contract_id
        )
        return SettlementResult(
            str(settled.state),
            format_decimal(settled.rolled_over),
            format_decimal(settled.breakage),
        )

    def all(self) -> list[Callable[..., Awaitable[object]]]:
        """Every activity, for the worker to register."""
        return [self.dates, self.prepare, self.settle]


@workflow.defn(name="Renewal")
class RenewalWorkflow:
    """Renew or end one contract's term; `state` says what it is waiting for."""

    def __init__(self) -> None:
        self._state = "starting"

    @workflow.query
    def state(self) -> str:
        """What the renewal is doing or waiting for (a `TermState` once settled)."""
        return self._state

    @workflow.run
    async def run(self, renewal: RenewalInput) -> SettlementResult:
        """Notice, then settlement at term end; "evergreen" when there is no term end."""
        contract = ContractRef(renewal.tenant_id, renewal.contract_id)
        if not renewal.notice_given:
            dates = await workflow.execute_activity_method(
                RenewalActivities.dates,
                contract,
                start_to_close_timeout=STEP_TIMEOUT,
                retry_policy=SETTLEMENT_RETRIES,
            )
            if dates is None:
                self._state = "evergreen"
                return SettlementResult("evergreen")
            self._state = "waiting_for_notice"
            await sleep_until(datetime.fromisoformat(dates.notice_at))
            self._state = "giving_notice"
            decision = await workflow.execute_activity_method(
                RenewalActivities.prepare,
                PrepareRequest(renewal.tenant_id, renewal.contract_id, dates.term_end),
                start_to_close_timeout=STEP_TIMEOUT,
                retry_policy=SETTLEMENT_RETRIES,
            )
            renewal = replace(
                renewal, notice_given=True, next_contract_id=decision.next_contract_id
            )
            self._state = "waiting_for_term_end"
            await sleep_until(datetime.fromisoformat(dates.term_end))
        request = SettleRequest(renewal.tenant_id, renewal.contract_id, renewal.next_contract_id)
        for _ in range(POLLS_PER_RUN):
            result = await workflow.execute_activity_method(
                RenewalActivities.settle,
                request,
                start_to_close_timeout=STEP_TIMEOUT,
                retry_policy=SETTLEMENT_RETRIES,
            )
            self._state = result.state
            if TermState(result.state).is_final:
                return result
            if workflow.info().is_continue_as_new_suggested():
                break
            await workflow.sleep(renewal.poll_seconds)
        workflow.continue_as_new(renewal)


def start_renewal(client: Client, task_queue: str, poll_seconds: float) -> Handler:
    """Start a new contract's renewal when it has a term end (once: the id is the contract's)."""

    async def start(row: OutboxRow) -> None:
        created = row.payload_as(ContractCreated)
        # Rows written before renewals existed have no term end: nothing to renew either.
        if created.get("term_end") is None:
            return  # evergreen: nothing ends, nothing renews
        contract_id = created["contract_id"]
        await start_once(
            client,
            RenewalWorkflow.run,
            RenewalInput(row.tenant_id, contract_id, poll_seconds),
            workflow_id=renewal_workflow_id(row.tenant_id, contract_id),
            task_queue=task_queue,
        )

    return start
