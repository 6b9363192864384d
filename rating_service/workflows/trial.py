"""TrialWorkflow: announce a contract's trial ending ahead, then its conversion at the end.

One per contract with a trial, started by the `contract.created` outbox row (id
`trial/<tenant>/<contract>`, so a second delivery is harmless). It asks when the trial ends
and when notice is due (`notice` before the end, default 3 days, never before the term
starts), sleeps until the notice and writes `contract.trial_ending`, sleeps until the end and
writes `contract.trial_converted`. Each announcement is one outbox row per contract, so a
retry or a replay announces once. Charging after the trial needs no step: invoices charge
usage whose service starts at or after the trial's end.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

from temporalio import activity, workflow
from temporalio.client import Client

with workflow.unsafe.imports_passed_through():
    from rating_service.outbox.dispatcher import Handler, OutboxRow
    from rating_service.outbox.topics import ContractCreated, Topic
    from rating_service.services.trial import Trials
    from rating_service.workflows.common import (
        SETTLEMENT_RETRIES,
        STEP_TIMEOUT,
        ContractRef,
        domain_errors_are_final,
        sleep_until,
        start_once,
    )


@dataclass(frozen=True)
class TrialDates:
    """When the trial ends and when its ending is announced (ISO-8601)."""

    ends_at: str
    notice_at: str


@dataclass(frozen=True)
class TrialAnnouncement:
    """Announce a contract's trial on `topic` (a `Topic` value)."""

    tenant_id: str
    contract_id: str
    topic: str


def trial_workflow_id(tenant_id: str, contract_id: str) -> str:
    """The contract's trial workflow id: starting it twice is harmless."""
    return f"trial/{tenant_id}/{contract_id}"


class TrialActivities:
    """The trial activities, bound to one Trials."""

    def __init__(self, trials: Trials) -> None:
        self._trials = trials

    @activity.defn(name="trial_dates")
    @domain_errors_are_final
    async def dates(self, contract: ContractRef) -> TrialDates | None:
        """When the trial ends and its notice is due; None when the contract has no trial."""
        found = await self._trials.schedule(contract.tenant_id, contract.contract_id)
        if found is None:
            return None
        return TrialDates(found.ends_at.isoformat(), found.notice_at.isoformat())

    @activity.defn(name="announce_trial")
    @domain_errors_are_final
    async def announce(self, request: TrialAnnouncement) -> bool:
        """Write the announcement's outbox row (once per contract and topic); False: none due."""
        return await self._trials.announce(
            request.tenant_id, request.contract_id, Topic(request.topic)
        )

    def all(self) -> list[Callable[..., Awaitable[object]]]:
        """Every activity, for the worker to register."""
        return [self.dates, self.announce]


@workflow.defn(name="Trial")
class TrialWorkflow:
    """Announce one contract's trial ending, then its conversion; `state` says where it is."""

    def __init__(self) -> None:
        self._state = "starting"

    @workflow.query
    def state(self) -> str:
        """waiting_for_notice, waiting_for_end, converted, or no_trial."""
        return self._state

    @workflow.run
    async def run(self, contract: ContractRef) -> str:
        """Notice, then conversion; the final state."""
        dates = await workflow.execute_activity_method(
            TrialActivities.dates,
            contract,
            start_to_close_timeout=STEP_TIMEOUT,
            retry_policy=SETTLEMENT_RETRIES,
        )
        if dates is None:
            self._state = "no_trial"
            return self._state
        for state, moment, topic in (
            ("waiting_for_notice", dates.notice_at, Topic.CONTRACT_TRIAL_ENDING),
            ("waiting_for_end", dates.ends_at, Topic.CONTRACT_TRIAL_CONVERTED),
        ):
            self._state = state
            await sleep_until(datetime.fromisoformat(moment))
            await workflow.execute_activity_method(
                TrialActivities.announce,
                TrialAnnouncement(contract.tenant_id, contract.contract_id, topic.value),
                start_to_close_timeout=STEP_TIMEOUT,
                retry_policy=SETTLEMENT_RETRIES,
            )
        self._state = "converted"
        return self._state


def start_trial(client: Client, task_queue: str) -> Handler:
    """Start a new contract's trial workflow if it has a trial (once: the id is the contract's)."""

    async def start(row: OutboxRow) -> None:
        created = row.payload_as(ContractCreated)
        if created.get("trial_ends_at") is None:
            return  # no trial (or a row written before trials): nothing to announce
        contract_id = created["contract_id"]
        await start_once(
            client,
            TrialWorkflow.run,
            ContractRef(row.tenant_id, contract_id),
            workflow_id=trial_workflow_id(row.tenant_id, contract_id),
            task_queue=task_queue,
        )

    return start
