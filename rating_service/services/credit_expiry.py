"""Credit expiry: warn before a pool expires, then move what is left of it to breakage, once.

The steps of CreditExpiryWorkflow, each idempotent on the pool (never on the workflow run).
A pool's balance goes to breakage only when all of these hold, checked in this order:

1. its `expires_at` has passed (the rating engine stopped drawing from it at that instant);
2. it is not waiting for a renewal: a pool that lives until the term end of a contract that
   auto-renews is rolled over by the renewal first (`rating_service.services.renewal`), which then
   expires the rest itself and ends the contract;
3. the invoice of the billing period it ends in is finalized, so late usage of that period
   could still draw from it and that invoice saw it as it was;
4. no reservation holds part of it: holds made before it expired may still be captured (the
   customer reserved in time) or released, and once they are resolved everything left goes at
   once. Holds live at most a day (their TTL), so this wait is bounded.

Each unmet condition is an answer to poll again later, not an error.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from rating_service.core.billing.invoice import invoice_id_for
from rating_service.core.contracts.expiry import (
    pool_expiry,
    settling_billing_date,
    waits_for_renewal,
)
from rating_service.core.errors import InvalidArgument
from rating_service.core.money import format_decimal
from rating_service.outbox.topics import ExpiryWarning, Topic
from rating_service.services.catalog import utc_now
from rating_service.store.contract import ContractStore
from rating_service.store.settlement import SettlementStore

ACTOR = "workflow:expiry"
"""Who the audit log names for what credit expiry does."""

ZERO = Decimal(0)


class ExpiryState(StrEnum):
    """Where a pool's expiry stands."""

    NOT_DUE = "not_due"
    """The pool has not expired yet."""
    WAITING_FOR_RENEWAL = "waiting_for_renewal"
    """The contract renews: its renewal rolls the pool over first."""
    WAITING_FOR_INVOICE = "waiting_for_invoice"
    """The invoice of the period the pool ends in is not finalized yet."""
    HOLDS_PENDING = "holds_pending"
    """Reservations still hold part of the balance."""
    EXPIRED = "expired"
    """The remaining balance is in breakage (moved now or by an earlier attempt)."""
    NOTHING_LEFT = "nothing_left"
    """The pool was empty when it expired: nothing moved."""

    @property
    def is_final(self) -> bool:
        """True once nothing more will happen to the pool."""
        return self in (ExpiryState.EXPIRED, ExpiryState.NOTHING_LEFT)


@dataclass(frozen=True, slots=True)
class ExpiryOutcome:
    """Where the expiry stands, and the amount in breakage once it has expired."""

    state: ExpiryState
    amount: Decimal = ZERO


class CreditExpiry:
    """Warns of and carries out pool expiries over the contract and settlement stores."""

    def __init__(
        self,
        contracts: ContractStore,
        settlement: SettlementStore,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._contracts = contracts
        self._settlement = settlement
        self._clock = clock

    async def warn(self, tenant_id: str, contract_id: str, pool_id: str) -> bool:
        """Write the pool's `expiry.warning` (once), unless nothing is left in it to lose."""
        pool = (await self._contracts.commitment(tenant_id, contract_id, pool_id)).pool
        if pool.expires_at is None or pool.available <= 0:
            return False
        await self._settlement.notice(
            tenant_id,
            Topic.EXPIRY_WARNING,
            pool_id,
            ExpiryWarning(
                contract_id=contract_id,
                pool_id=pool_id,
                expires_at=pool.expires_at.isoformat(),
                balance=format_decimal(pool.available),
            ),
        )
        return True

    async def expire(self, tenant_id: str, contract_id: str, pool_id: str) -> ExpiryOutcome:
        """Move the pool's remaining balance to breakage when it may go (see the module)."""
        contract = await self._contracts.contract(tenant_id, contract_id)
        pool = (await self._contracts.commitment(tenant_id, contract_id, pool_id)).pool
        if pool.expires_at is None:
            raise InvalidArgument.of_field("pool_id", f"{pool_id!r} never expires")
        if self._clock() < pool.expires_at:
            return ExpiryOutcome(ExpiryState.NOT_DUE)
        if waits_for_renewal(pool, contract):
            return ExpiryOutcome(ExpiryState.WAITING_FOR_RENEWAL)
        billing_date = settling_billing_date(contract, pool.expires_at)
        if billing_date is not None and not await self._settlement.invoice_finalized(
            tenant_id, invoice_id_for(contract_id, billing_date)
        ):
            return ExpiryOutcome(ExpiryState.WAITING_FOR_INVOICE)
        moved = await self._settlement.expire_pool(
            tenant_id, contract_id, pool_id, ACTOR, pool_expiry
        )
        if moved.holds_pending:
            return ExpiryOutcome(ExpiryState.HOLDS_PENDING)
        if moved.amount:
            return ExpiryOutcome(ExpiryState.EXPIRED, moved.amount)
        return ExpiryOutcome(ExpiryState.NOTHING_LEFT)
