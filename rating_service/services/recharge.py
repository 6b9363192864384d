"""Auto-recharge: charge the saved payment method, and only on success grant a paid credit pool.

A recharge is keyed by the event whose debit crossed the threshold (`rch_<contract>_<event>`),
each charge attempt by the recharge and the attempt number, and the pool it grants by the
recharge (a top-up with the recharge's id). So a retried activity or a replayed workflow finds
what was done and never charges or grants twice.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from decimal import Decimal

import asyncpg

from rating_service.core.auth import Caller, Role
from rating_service.core.contracts.contract import ContractStatus
from rating_service.core.errors import NotFound
from rating_service.core.ledger.accounts import AccountKind, cash_account_id
from rating_service.core.ledger.posting_rules import recharge_payment_transfers
from rating_service.outbox.topics import (
    AutoRechargeDisabled,
    OutboxPayload,
    RechargeFailed,
    RechargeSucceeded,
    Topic,
)
from rating_service.payments.gateway import (
    ChargeOutcome,
    ChargeRequest,
    PaymentGateway,
    UnknownPaymentMethod,
)
from rating_service.services.contract import ContractAdmin
from rating_service.store.contract import ContractStore, amend_contract, lock_contract
from rating_service.store.database import Connection
from rating_service.store.effects import AuditEntry, write_outbox
from rating_service.store.ledger import open_accounts, post_transfers, transfers_by_reference

ACTOR = "auto-recharge"
"""Who the audit log names for what auto-recharge does."""

DISABLE = "auto_recharge.disable"
"""Audit action of switching auto-recharge off after the last failed attempt."""


@dataclass(frozen=True, slots=True)
class RechargePlan:
    """A recharge to make: how much, and how hard to try."""

    recharge_id: str
    amount: Decimal
    max_attempts: int
    retry_seconds: float
    state: str


@dataclass(frozen=True, slots=True)
class ChargeAttempt:
    """One attempt's answer: the pool granted on success, the decline code otherwise."""

    succeeded: bool
    pool_id: str = ""
    decline_code: str = ""


class AutoRecharging:
    """Begins recharges, charges them, grants their pools, and gives up by policy."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        contracts: ContractStore,
        admin: ContractAdmin,
        gateway: PaymentGateway,
    ) -> None:
        self._pool = pool
        self._contracts = contracts
        self._admin = admin
        self._gateway = gateway

    async def begin(self, tenant_id: str, contract_id: str, trigger: str) -> RechargePlan | None:
        """Record the recharge a threshold crossing asks for; None if auto-recharge is off."""
        contract = await self._contracts.contract(tenant_id, contract_id)
        settings = contract.auto_recharge
        if (
            settings is None
            or not settings.enabled
            or not contract.payment_method
            or contract.status is not ContractStatus.ACTIVE
        ):
            return None
        recharge_id = f"rch_{contract_id}_{trigger}"
        await self._pool.execute(
            "INSERT INTO recharges (tenant_id, recharge_id, contract_id, amount, state)"
            " VALUES ($1, $2, $3, $4, 'pending') ON CONFLICT DO NOTHING",
            tenant_id,
            recharge_id,
            contract_id,
            settings.amount,
        )
        row = await self._recharge(tenant_id, recharge_id)
        return RechargePlan(
            recharge_id,
            row["amount"],
            settings.max_attempts,
            settings.retry_after.total_seconds(),
            row["state"],
        )

    async def charge(self, tenant_id: str, recharge_id: str, attempt: int) -> ChargeAttempt:
        """Charge attempt n of a recharge; on success grant its pool and book the payment."""
        row = await self._recharge(tenant_id, recharge_id)
        if row["state"] == "succeeded":
            return ChargeAttempt(True, row["pool_id"])
        contract = await self._contracts.contract(tenant_id, row["contract_id"])
        try:
            outcome = await self._gateway.charge(
                ChargeRequest(
                    f"{recharge_id}:charge:{attempt}",
                    contract.payment_method,
                    row["amount"],
                    contract.invoice_currency.code,
                    recharge_id,
                )
            )
        except UnknownPaymentMethod as refused:
            # Charged nothing: a failed attempt like a decline, retried by the recharge policy.
            outcome = ChargeOutcome(False, decline_code=refused.code, message=str(refused))
        if not outcome.succeeded:
            async with self._pool.acquire() as conn, conn.transaction():
                await conn.execute(
                    "UPDATE recharges SET attempts = greatest(attempts, $3), failure_code = $4"
                    " WHERE tenant_id = $1 AND recharge_id = $2",
                    tenant_id,
                    recharge_id,
                    attempt,
                    outcome.decline_code,
                )
                await _notice(
                    conn,
                    tenant_id,
                    Topic.RECHARGE_FAILED,
                    f"{recharge_id}:{attempt}",
                    RechargeFailed(
                        contract_id=contract.contract_id,
                        recharge_id=recharge_id,
                        attempt=attempt,
                        decline_code=outcome.decline_code,
                    ),
                )
            return ChargeAttempt(False, decline_code=outcome.decline_code)
        # Paid: the credit is granted under the recharge's id (a retry finds the same pool).
        caller = Caller(tenant_id, ACTOR, Role.ADMIN)
        granted = await self._admin.top_up(
            caller,
            {
                "top_up_id": recharge_id,
                "contract_id": contract.contract_id,
                "amount": str(row["amount"]),
                "memo": f"auto-recharge, charge {outcome.gateway_reference}",
            },
        )
        pool_id = granted.commitment.pool.pool_id
        reference = f"recharge:{recharge_id}"
        async with self._pool.acquire() as conn, conn.transaction():
            if not await transfers_by_reference(conn, tenant_id, reference):
                cash = (cash_account_id(contract.contract_id), AccountKind.CASH, None)
                await open_accounts(
                    conn, tenant_id, contract.contract_id, [cash], contract.invoice_currency.code
                )
                await post_transfers(
                    conn,
                    tenant_id,
                    recharge_payment_transfers(
                        reference=reference,
                        contract_id=contract.contract_id,
                        amount=row["amount"],
                    ),
                )
            await conn.execute(
                "UPDATE recharges SET state = 'succeeded', pool_id = $3, attempts = $4,"
                " settled_at = now() WHERE tenant_id = $1 AND recharge_id = $2",
                tenant_id,
                recharge_id,
                pool_id,
                attempt,
            )
            await _notice(
                conn,
                tenant_id,
                Topic.RECHARGE_SUCCEEDED,
                recharge_id,
                RechargeSucceeded(
                    contract_id=contract.contract_id,
                    recharge_id=recharge_id,
                    pool_id=pool_id,
                    amount=str(row["amount"]),
                ),
            )
        return ChargeAttempt(True, pool_id)

    async def give_up(self, tenant_id: str, recharge_id: str) -> None:
        """After the last failed attempt: the recharge failed, and auto-recharge is switched off."""
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "UPDATE recharges SET state = 'failed', settled_at = now()"
                " WHERE tenant_id = $1 AND recharge_id = $2 AND state = 'pending'"
                " RETURNING contract_id",
                tenant_id,
                recharge_id,
            )
            if row is None:
                return  # settled before: this is a retry
            contract_id = row["contract_id"]
            contract = await lock_contract(conn, tenant_id, contract_id)
            if contract.auto_recharge is not None:
                # Rating caches the contract: it stops watching the threshold at commit.
                switched_off = replace(contract.auto_recharge, enabled=False)
                await amend_contract(
                    conn,
                    replace(contract, auto_recharge=switched_off),
                    AuditEntry(ACTOR, DISABLE, contract_id, {"recharge_id": recharge_id}),
                )
            await _notice(
                conn,
                tenant_id,
                Topic.AUTO_RECHARGE_DISABLED,
                recharge_id,
                AutoRechargeDisabled(contract_id=contract_id, recharge_id=recharge_id),
            )

    async def _recharge(self, tenant_id: str, recharge_id: str) -> asyncpg.Record:
        row = await self._pool.fetchrow(
            "SELECT recharge_id, contract_id, amount, state, pool_id FROM recharges"
            " WHERE tenant_id = $1 AND recharge_id = $2",
            tenant_id,
            recharge_id,
        )
        if row is None:
            raise NotFound(f"no recharge {recharge_id!r}", reason="RECHARGE_NOT_FOUND")
        return row


async def _notice(
    conn: Connection, tenant_id: str, topic: Topic, key: str, payload: OutboxPayload
) -> None:
    """A notification, in the same transaction as what it announces (delivered once per key)."""
    await write_outbox(conn, tenant_id, topic, topic.dedupe_key(tenant_id, key), payload)
