"""Trials: when a contract's trial ends, and announcing its end ahead and its conversion.

What a trial changes on invoices is pure core (a free-usage trial's `trial` line, see
`rating_service.core.billing.compose`; a trial credit is an ordinary free credit pool granted
with the contract). After the trial ends, usage is charged as usual: conversion needs no
change to the contract, only its announcement.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from rating_service.outbox.topics import Topic, TrialEvent
from rating_service.store.contract import ContractStore
from rating_service.store.trial import TrialStore


@dataclass(frozen=True, slots=True)
class TrialSchedule:
    """When a trial ends, and when its end is announced (notice before, not before start)."""

    ends_at: datetime
    notice_at: datetime


class Trials:
    """Reads trials from contracts and announces their ending and conversion."""

    def __init__(self, contracts: ContractStore, store: TrialStore) -> None:
        self._contracts = contracts
        self._store = store

    async def schedule(self, tenant_id: str, contract_id: str) -> TrialSchedule | None:
        """The contract's trial dates; None when it has no trial."""
        contract = await self._contracts.contract(tenant_id, contract_id)
        trial = contract.trial
        if trial is None:
            return None
        return TrialSchedule(trial.ends_at, max(trial.ends_at - trial.notice, contract.term_start))

    async def announce(self, tenant_id: str, contract_id: str, topic: Topic) -> bool:
        """Write `contract.trial_ending` or `contract.trial_converted`; False: no trial."""
        contract = await self._contracts.contract(tenant_id, contract_id)
        trial = contract.trial
        if trial is None:
            return False
        if topic is Topic.CONTRACT_TRIAL_CONVERTED and (
            contract.term_end is not None and contract.term_end <= trial.ends_at
        ):
            return False  # the contract ended during its trial: nothing converts
        event = TrialEvent(
            contract_id=contract_id, ends_at=trial.ends_at.isoformat(), mode=str(trial.mode)
        )
        await self._store.announce(tenant_id, topic, contract_id, event)
        return True
