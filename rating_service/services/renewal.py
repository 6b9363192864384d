"""Renewals: before a term ends, arrange the next one; at its end, settle the term's credit.

The steps of RenewalWorkflow, each idempotent on the contract (never on the workflow run):

- **schedule**: when the term ends and when to give notice (`renewal.notice` before it).
- **prepare** (at the notice): when the contract auto-renews, create the next term's contract
  (`rating_service.core.contracts.renewal.next_contract`, under an id derived from this one's, so a
  retry finds it; its own billing and renewal start from its `contract.created` row) and grant
  it the renewal's commitments (grant ids derived from the next contract); then write
  `renewal.upcoming`, saying whether it renews. A contract that is suspended, or whose term was
  cut short by a cancellation, does not renew.
- **settle** (at term end, once the final invoice, true-up included, is finalized and no
  reservation holds any pool): roll the unused prepaid balance over into one credit of the
  next term (reference `rollover:<contract>`), expire everything else left in the contract's
  pools to breakage, and mark the contract `ended` with `contract.renewed` or
  `contract.ended`. Pool expiries that waited for the renewal go on from there.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from rating_service.core.auth import Caller, Role
from rating_service.core.billing.invoice import invoice_id_for
from rating_service.core.contracts.contract import Contract, ContractStatus
from rating_service.core.contracts.expiry import pool_expiry
from rating_service.core.contracts.lifecycle import Renewal
from rating_service.core.contracts.pools import CommitmentKind, Pool
from rating_service.core.contracts.renewal import next_contract, renewed_contract_id, rollover
from rating_service.core.errors import FailedPrecondition, InvalidArgument, NotFound
from rating_service.core.ids import new_id
from rating_service.core.ledger.posting_rules import rollover_transfers
from rating_service.core.money import exact_sum, format_decimal
from rating_service.outbox.topics import RenewalUpcoming, TermEnded, Topic
from rating_service.services.contract import ContractAdmin
from rating_service.store.contract import (
    CONTRACT_OVERLAP,
    Commitment,
    ContractStore,
)
from rating_service.store.effects import AuditEntry
from rating_service.store.settlement import SettlementStore

ACTOR = "workflow:renewal"
"""Who the audit log names for what renewals do."""

ROLL_OVER = "commitment.roll_over"
"""Audit action of the credit a renewal carries into the next term."""

DEFAULT_NOTICE = Renewal().notice
"""How long before its end a term without renewal terms announces that it ends."""

ZERO = Decimal(0)


def rollover_reference(contract_id: str) -> str:
    """The reference of a term's rollover: its transfers, and the next term's credit grant."""
    return f"rollover:{contract_id}"


class TermState(StrEnum):
    """Where a term's settlement stands."""

    WAITING_FOR_INVOICE = "waiting_for_invoice"
    """The final invoice is not finalized yet."""
    HOLDS_PENDING = "holds_pending"
    """Reservations still hold part of a pool."""
    RENEWED = "renewed"
    """Settled: the next term took over, with the rollover."""
    ENDED = "ended"
    """Settled: the contract ended without renewal."""

    @property
    def is_final(self) -> bool:
        """True once the term is settled."""
        return self in (TermState.RENEWED, TermState.ENDED)


@dataclass(frozen=True, slots=True)
class RenewalSchedule:
    """When the term ends and when notice of its end (or renewal) is given."""

    term_end: datetime
    notice_at: datetime


@dataclass(frozen=True, slots=True)
class RenewalNotice:
    """Whether the term renews, and into which contract."""

    renews: bool
    next_contract_id: str | None


@dataclass(frozen=True, slots=True)
class TermSettlement:
    """Where the settlement stands; once settled, what rolled over and what went to breakage."""

    state: TermState
    rolled_over: Decimal = ZERO
    breakage: Decimal = ZERO


class Renewals:
    """Arranges next terms and settles ended ones over the contract and settlement stores."""

    def __init__(
        self,
        contracts: ContractStore,
        admin: ContractAdmin,
        settlement: SettlementStore,
    ) -> None:
        self._contracts = contracts
        self._admin = admin
        self._settlement = settlement

    async def schedule(self, tenant_id: str, contract_id: str) -> RenewalSchedule | None:
        """When the term ends and notice is due; None for an evergreen contract."""
        contract = await self._contracts.contract(tenant_id, contract_id)
        if contract.term_end is None:
            return None
        notice = contract.renewal.notice if contract.renewal is not None else DEFAULT_NOTICE
        return RenewalSchedule(
            contract.term_end, max(contract.term_end - notice, contract.term_start)
        )

    async def prepare(
        self, tenant_id: str, contract_id: str, scheduled_end: datetime
    ) -> RenewalNotice:
        """Arrange the next term if the contract renews, and announce `renewal.upcoming`."""
        contract = await self._contracts.contract(tenant_id, contract_id)
        next_id = renewed_contract_id(contract_id)
        arranged = await self._existing(tenant_id, next_id)
        renews = (
            contract.renewal is not None
            and contract.renewal.auto_renew
            and contract.status is ContractStatus.ACTIVE
            # A cancellation moved the term end: the customer is leaving, not renewing.
            and contract.term_end == scheduled_end
        )
        if arranged is None and renews:
            arranged = await self._create_next(contract)
        if arranged is not None and contract.renewal is not None:
            await self._grant_renewal_commitments(contract.renewal, arranged)
        await self._settlement.notice(
            tenant_id,
            Topic.RENEWAL_UPCOMING,
            contract_id,
            RenewalUpcoming(
                contract_id=contract_id,
                term_end=None if contract.term_end is None else contract.term_end.isoformat(),
                renews=arranged is not None,
                next_contract_id=None if arranged is None else arranged.contract_id,
            ),
        )
        return RenewalNotice(arranged is not None, None if arranged is None else next_id)

    async def settle(
        self, tenant_id: str, contract_id: str, next_contract_id: str | None
    ) -> TermSettlement:
        """Roll over into the next term (if any), expire the rest, and end the contract."""
        contract = await self._contracts.contract(tenant_id, contract_id)
        if contract.term_end is None:
            raise InvalidArgument.of_field("contract_id", f"{contract_id!r} has no term end")
        if contract.status is ContractStatus.ENDED:
            return await self._settled(contract, next_contract_id)
        if not await self._settlement.invoice_finalized(
            tenant_id, invoice_id_for(contract_id, contract.term_end)
        ):
            return TermSettlement(TermState.WAITING_FOR_INVOICE)
        commitments = await self._contracts.commitments(tenant_id, contract_id)
        pools = [c.pool for c in commitments if c.pool.is_drawable]
        if any(pool.pending for pool in pools):
            return TermSettlement(TermState.HOLDS_PENDING)
        rolled_over = ZERO
        if next_contract_id is not None:
            rolled_over = await self._roll_over(contract, next_contract_id, pools)
        expired: list[Decimal] = []
        for pool in pools:
            moved = await self._settlement.expire_pool(
                tenant_id, contract_id, pool.pool_id, ACTOR, pool_expiry
            )
            if moved.holds_pending:
                return TermSettlement(TermState.HOLDS_PENDING)
            expired.append(moved.amount)
        breakage = exact_sum(expired)
        renewed = next_contract_id is not None
        await self._settlement.end_term(
            tenant_id,
            contract_id,
            Topic.CONTRACT_RENEWED if renewed else Topic.CONTRACT_ENDED,
            TermEnded(
                contract_id=contract_id,
                term_end=contract.term_end.isoformat(),
                next_contract_id=next_contract_id,
                rolled_over=format_decimal(rolled_over),
                breakage=format_decimal(breakage),
            ),
            ACTOR,
        )
        return TermSettlement(
            TermState.RENEWED if renewed else TermState.ENDED, rolled_over, breakage
        )

    async def _existing(self, tenant_id: str, contract_id: str) -> Contract | None:
        try:
            return await self._contracts.contract(tenant_id, contract_id)
        except NotFound:
            return None

    async def _create_next(self, contract: Contract) -> Contract:
        """Create the next term's contract; a retry that finds it made returns it."""
        arranged = next_contract(contract)
        try:
            await self._contracts.create_contract(arranged, ACTOR)
        except FailedPrecondition as refused:
            # Overlapping the contract this renewal made already is finding it, not a clash.
            clash = refused.metadata.get("contract_id")
            if refused.reason != CONTRACT_OVERLAP or clash != arranged.contract_id:
                raise
        return arranged

    async def _grant_renewal_commitments(self, terms: Renewal, arranged: Contract) -> None:
        """Grant the renewal's commitments to the next term, usable for the whole of it."""
        caller = Caller(arranged.tenant_id, ACTOR, Role.ADMIN)
        for index, commitment in enumerate(terms.commitments):
            await self._admin.add_commitment(
                caller,
                {
                    "grant_id": f"renewal-{arranged.contract_id}-{index}",
                    "contract_id": arranged.contract_id,
                    "kind": str(commitment.kind),
                    "amount": format_decimal(commitment.amount),
                    "priority": commitment.priority,
                    "cost_basis": format_decimal(commitment.cost_basis),
                    "starts_at": arranged.term_start,
                    "expires_at": arranged.term_end,
                    "memo": "renewal commitment",
                },
            )

    async def _roll_over(
        self, contract: Contract, next_contract_id: str, pools: Sequence[Pool]
    ) -> Decimal:
        """Carry the unused prepaid balance into one credit of the next term (once)."""
        tenant_id = contract.tenant_id
        reference = rollover_reference(contract.contract_id)
        made = await self._contracts.grant(tenant_id, reference)
        if made is not None:
            return made.commitment.pool.original_amount
        if contract.renewal is None:
            return ZERO
        carried = rollover(contract.renewal, pools, contract)
        if not carried.parts:
            return ZERO
        arranged = await self._contracts.contract(tenant_id, next_contract_id)
        credit = Pool(
            new_id("pool"),
            arranged.contract_id,
            CommitmentKind.CREDIT,
            carried.priority,
            carried.cost_basis,
            carried.scope,
            arranged.term_start,
            arranged.term_end,
            0,
            carried.amount,
            carried.amount,
        )
        details = {
            "reference": reference,
            "fingerprint": reference,
            "from_contract_id": contract.contract_id,
            "parts": {pool_id: format_decimal(amount) for pool_id, amount in carried.parts},
        }
        stored = await self._contracts.add_commitment(
            tenant_id,
            arranged.customer_id,
            arranged.invoice_currency.code,
            Commitment(credit, reference),
            rollover_transfers(reference=reference, parts=carried.parts, to_pool_id=credit.pool_id),
            AuditEntry(ACTOR, ROLL_OVER, credit.pool_id, details),
        )
        return stored.commitment.pool.original_amount

    async def _settled(self, contract: Contract, next_contract_id: str | None) -> TermSettlement:
        """A settled term's outcome, read back (a retry after the contract was ended)."""
        tenant_id = contract.tenant_id
        made = await self._contracts.grant(tenant_id, rollover_reference(contract.contract_id))
        breakage = await self._settlement.breakage(tenant_id, contract.contract_id)
        return TermSettlement(
            TermState.RENEWED if next_contract_id is not None else TermState.ENDED,
            ZERO if made is None else made.commitment.pool.original_amount,
            breakage,
        )
