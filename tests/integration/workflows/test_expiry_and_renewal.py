"""Credit expiry and renewals on a real Temporal server, with periods a few seconds long.

A pool's balance goes to breakage once, only after the invoice of the period it ends in is
finalized and its holds are resolved; a renewing contract's next term is created before the
term ends and takes the capped rollover at its end; a contract that does not renew ends after
its final invoice. Workflows are started by the outbox dispatcher, as in production.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHandle, WorkflowHistory

from rating_client import NotFoundError
from rating_client.gen.rating.v1 import contract_pb2
from rating_service.core.ledger.accounts import breakage_account_id, pool_account_id
from rating_service.outbox.dispatcher import OutboxRow
from rating_service.outbox.topics import Topic
from rating_service.runtime.server import RunningServer
from rating_service.services.credit_expiry import CreditExpiry
from rating_service.settings import Settings
from rating_service.store.contract import ContractStore
from rating_service.store.database import asyncpg_dsn
from rating_service.store.ledger import reconcile
from rating_service.store.settlement import SettlementStore
from rating_service.workflows.billing import ContractBillingWorkflow, billing_workflow_id
from rating_service.workflows.credit_expiry import (
    CreditExpiryWorkflow,
    ExpiryResult,
    expiry_workflow_id,
    start_expiry,
)
from rating_service.workflows.renewal import SettlementResult, renewal_workflow_id
from tests.conftest import TenantKeys, eventually
from tests.integration.cycles import (
    billing_stack,
    billing_waits_for,
    database,
    open_billing_contract,
    record_history,
    sleep_until,
)

D = Decimal


def _timestamp(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


async def _outbox(conn: asyncpg.Connection, topic: str, key: str) -> list[asyncpg.Record]:
    """The outbox rows of a topic about one pool or contract (the dedupe key ends with it)."""
    return list(
        await conn.fetch(
            "SELECT payload, created_at FROM outbox WHERE topic = $1 AND dedupe_key LIKE $2"
            " ORDER BY outbox_id",
            topic,
            f"%:{key}",
        )
    )


def _payload(row: asyncpg.Record) -> dict[str, Any]:
    payload = row["payload"]
    return dict(json.loads(payload) if isinstance(payload, str) else payload)


async def _balance(conn: asyncpg.Connection, account_id: str) -> Decimal:
    """An account's credit balance (a pool's balance, what breakage received)."""
    balance = await conn.fetchval(
        "SELECT credits_posted - debits_posted FROM accounts WHERE account_id = $1", account_id
    )
    assert isinstance(balance, Decimal)
    return balance


async def _state(handle: WorkflowHandle[Any, Any], query: Any) -> str | None:
    try:
        return str(await handle.query(query))
    except Exception:  # not started yet: the dispatcher polls the outbox
        return None


async def test_a_credit_expires_once_after_its_period_is_invoiced_and_its_holds_resolve(
    settings: Settings, temporal_address: str, server: RunningServer, acme: TenantKeys
) -> None:
    async with database(settings) as conn:
        # Only `bill_now` invoices a period: the expiry must wait for that, however long.
        async with billing_stack(
            settings,
            temporal_address,
            server,
            acme,
            invoice_grace_seconds=600.0,
            expiry_warning_seconds=3.0,
            settlement_poll_seconds=0.2,
        ) as stack:
            client, temporal, config = stack.client, stack.temporal, stack.worker_config
            contract = await open_billing_contract(
                client, "cus_expiry", period_seconds=4, periods=3
            )
            start, customer = contract.term_start, contract.customer_id
            second_period_end = start + timedelta(seconds=8)
            # In the second period, [4 s, 8 s); warned at 4 s.
            expires_at = start + timedelta(seconds=7)
            granted = await client.call(
                client.contracts.AddCommitment,
                contract_pb2.AddCommitmentRequest(
                    grant_id="expiring",
                    contract_id=contract.contract_id,
                    kind="credit",
                    amount="5",
                    # From the term start: the usage below is stamped by the term's clock.
                    starts_at=_timestamp(start),
                    expires_at=_timestamp(expires_at),
                ),
            )
            pool_id = granted.commitment.pool_id
            expiry = temporal.get_workflow_handle(
                expiry_workflow_id(acme.tenant_id, pool_id), result_type=ExpiryResult
            )

            async def call(event_id: str, seconds: float) -> None:
                await client.rate_and_debit(
                    event_id=event_id,
                    customer_id=customer,
                    event_type="api.call",
                    properties={},
                    timestamp=start + timedelta(seconds=seconds),
                )

            await call("before-expiry", 5)  # $1 from the pool: 4 left
            # A hold made before the expiry, held until the test voids it once the invoice is
            # done: on a loaded machine a TTL could run out before the invoice, hiding the wait.
            await client.authorize(
                reservation_id="held",
                customer_id=customer,
                product_key="calls",
                amount=D(1),
                ttl_seconds=300,
                timestamp=start + timedelta(seconds=5.5),
            )
            await eventually(
                lambda: _outbox_has(conn, "expiry.warning", pool_id), timeout_seconds=10
            )
            await sleep_until(expires_at + timedelta(seconds=0.3))
            # Late usage of the pool's last period still draws from it (3 left), later usage not.
            await call("late-but-in-time", 6.7)
            await call("after-expiry", 7.2)
            await eventually(
                lambda: _is(expiry, CreditExpiryWorkflow.state, "waiting_for_invoice"),
                timeout_seconds=10,
            )
            billing = temporal.get_workflow_handle(
                billing_workflow_id(acme.tenant_id, contract.contract_id)
            )
            await billing.signal(ContractBillingWorkflow.bill_now)  # the first period only
            await eventually(
                lambda: billing_waits_for(billing, second_period_end), timeout_seconds=15
            )
            await sleep_until(second_period_end + timedelta(seconds=0.2))
            # The pool's period has ended but is not invoiced: its balance is still there.
            assert await _state(expiry, CreditExpiryWorkflow.state) == "waiting_for_invoice"
            assert await _balance(conn, pool_account_id(pool_id)) == D(3)
            await billing.signal(ContractBillingWorkflow.bill_now)
            # Invoiced now, the pool still waits for the hold; released, it expires.
            await eventually(
                lambda: _is(expiry, CreditExpiryWorkflow.state, "holds_pending"),
                timeout_seconds=30,
            )
            assert await _balance(conn, pool_account_id(pool_id)) == D(3)
            await client.void("held")
            async with asyncio.timeout(30):
                result = await expiry.result()
            assert (result.state, D(result.amount)) == ("expired", D(3))
            *_, last_run = await record_history(temporal, expiry.id, "credit_expiry")
            # Its history says the same: invoiced, it waited for the hold, and the balance moved
            # only after the hold's release.
            assert _expiry_states(last_run.history)[-2:] == ["holds_pending", "expired"]
            assert await _last_seq(conn, "reservation:held") < await _last_seq(
                conn, f"expiry:{pool_id}"
            )

            # A redelivered `commitment.added` row starts nothing new; a retried step moves
            # nothing more.
            row = await conn.fetchrow(
                "SELECT tenant_id, topic, dedupe_key, payload, created_at FROM outbox"
                " WHERE topic = 'commitment.added' AND dedupe_key LIKE $1",
                f"%:{pool_id}",
            )
            assert row is not None
            redeliver = start_expiry(temporal, config.temporal_task_queue, 3.0, 0.2)
            await redeliver(
                OutboxRow(
                    row["tenant_id"],
                    Topic(row["topic"]),
                    row["dedupe_key"],
                    _payload(row),
                    row["created_at"],
                )
            )
        pool = await asyncpg.create_pool(
            asyncpg_dsn(settings.database_url or ""), min_size=1, max_size=2
        )
        try:
            credit_expiry = CreditExpiry(ContractStore(pool), SettlementStore(pool))
            again = await credit_expiry.expire(acme.tenant_id, contract.contract_id, pool_id)
        finally:
            await pool.close()
        assert (str(again.state), again.amount) == ("expired", D(3))

        moved = await conn.fetch(
            "SELECT debit_account_id, credit_account_id, amount FROM transfers"
            " WHERE reference = $1",
            f"expiry:{pool_id}",
        )
        assert [tuple(r) for r in moved] == [
            (pool_account_id(pool_id), breakage_account_id(contract.contract_id), D(3))
        ]
        assert await _balance(conn, pool_account_id(pool_id)) == 0
        [warning] = await _outbox(conn, "expiry.warning", pool_id)
        assert warning["created_at"] < expires_at
        # After the hold, before or after the late call.
        assert D(_payload(warning)["balance"]) in (D(3), D(4))
        [expired] = await _outbox(conn, "credit.expired", pool_id)
        assert D(_payload(expired)["amount"]) == D(3)
        second_invoice = await conn.fetchrow(
            "SELECT issued_at FROM invoices WHERE contract_id = $1 AND billing_date = $2",
            contract.contract_id,
            second_period_end,
        )
        assert second_invoice is not None and second_invoice["issued_at"] < expired["created_at"]
        assert all(report.clean for report in (await reconcile(conn)).values())


def _expiry_states(history: WorkflowHistory) -> list[str]:
    """The state each step of a credit expiry answered, in order, without repeats."""
    states: list[str] = []
    for event in history.events:
        if event.event_type != EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            continue
        for payload in event.activity_task_completed_event_attributes.result.payloads:
            answer = json.loads(payload.data)
            if isinstance(answer, dict) and "state" in answer and states[-1:] != [answer["state"]]:
                states.append(answer["state"])
    return states


async def _last_seq(conn: asyncpg.Connection, reference: str) -> int:
    """Where in the journal the last transfer with this reference was posted."""
    seq = await conn.fetchval("SELECT max(seq) FROM transfers WHERE reference = $1", reference)
    assert isinstance(seq, int), f"no transfer {reference!r}"
    return seq


async def _outbox_has(conn: asyncpg.Connection, topic: str, key: str) -> bool:
    return bool(await _outbox(conn, topic, key))


async def _is(handle: WorkflowHandle[Any, Any], query: Any, state: str) -> bool:
    return await _state(handle, query) == state


RENEWAL = {
    "auto_renew": True,
    "commitments": [{"kind": "prepaid_commit", "amount": "20", "cost_basis": "1"}],
    "rollover_percent": "50",
    "rollover_cap": "3",
    "notice_seconds": 3,
}


async def test_a_renewal_creates_the_next_term_and_rolls_over_up_to_the_cap(
    settings: Settings, temporal_address: str, server: RunningServer, acme: TenantKeys
) -> None:
    async with database(settings) as conn:
        async with billing_stack(
            settings, temporal_address, server, acme, settlement_poll_seconds=0.2
        ) as stack:
            client, temporal = stack.client, stack.temporal
            contract = await open_billing_contract(
                client, "cus_renews", period_seconds=3, periods=2, renewal=RENEWAL
            )
            old_id, term_end = contract.contract_id, contract.term_end
            # Both usable for the whole term: a grant starts when it is made unless it says
            # otherwise, and usage is drawn by its timestamp, so a pool starting "now" would
            # miss usage stamped earlier in the term.
            term_start = _timestamp(contract.term_start)
            commit = await client.call(
                client.contracts.AddCommitment,
                contract_pb2.AddCommitmentRequest(
                    grant_id="commit",
                    contract_id=old_id,
                    kind="prepaid_commit",
                    amount="10",
                    cost_basis="1",
                    starts_at=term_start,
                    expires_at=_timestamp(term_end),
                ),
            )
            free = await client.call(
                client.contracts.AddCommitment,
                contract_pb2.AddCommitmentRequest(
                    grant_id="free",
                    contract_id=old_id,
                    kind="credit",
                    amount="2",
                    starts_at=term_start,
                ),
            )
            commit_id, free_id = commit.commitment.pool_id, free.commitment.pool_id
            # $1, from the free credit (free before paid): the commit's 10 stays unused.
            # Stamped as it is sent, so it lands in the period that is open whenever that is.
            used = await client.rate_and_debit(
                event_id="used",
                customer_id=contract.customer_id,
                event_type="api.call",
                properties={},
                timestamp=datetime.now(UTC),
            )
            assert (used.contract_id, D(used.overage)) == (old_id, D(0))
            assert [(d.pool_id, D(d.amount)) for d in used.draws] == [(free_id, D(1))]
            renewal = temporal.get_workflow_handle(
                renewal_workflow_id(acme.tenant_id, old_id), result_type=SettlementResult
            )
            await eventually(lambda: _outbox_has(conn, "renewal.upcoming", old_id), 15)
            async with asyncio.timeout(30):
                # Unused prepaid 10: 50% is 5, capped at 3. The rest (7 + the free 1) expires.
                settled = await renewal.result()
            assert (settled.state, D(settled.rolled_over), D(settled.breakage)) == (
                "renewed",
                D(3),
                D(8),
            )
            await record_history(temporal, renewal.id, "renewal_renewed")
            commit_expiry = temporal.get_workflow_handle(
                expiry_workflow_id(acme.tenant_id, commit_id), result_type=ExpiryResult
            )
            async with asyncio.timeout(15):  # it waited for the renewal, which expired the rest
                expired_commit = await commit_expiry.result()
            assert (expired_commit.state, D(expired_commit.amount)) == ("expired", D(7))

            next_id = f"{old_id}.2"
            [upcoming] = await _outbox(conn, "renewal.upcoming", old_id)
            assert upcoming["created_at"] < term_end
            assert _payload(upcoming) == {
                "contract_id": old_id,
                "term_end": term_end.isoformat(),
                "renews": True,
                "next_contract_id": next_id,
            }
            renewed = await client.call(
                client.contracts.GetContract, contract_pb2.GetContractRequest(contract_id=next_id)
            )
            assert renewed.contract.term_start.ToDatetime(UTC) == term_end
            assert renewed.contract.term_end.ToDatetime(UTC) == term_end + timedelta(seconds=6)
            assert renewed.contract.renewal.rollover_cap == "3"
            pools = {c.reference: c for c in renewed.commitments}
            assert set(pools) == {f"grant:renewal-{next_id}-0", f"rollover:{old_id}"}
            granted, rolled = pools[f"grant:renewal-{next_id}-0"], pools[f"rollover:{old_id}"]
            assert (granted.kind, D(granted.amount), D(granted.balance)) == (
                "prepaid_commit",
                D(20),
                D(20),
            )
            assert (rolled.kind, D(rolled.balance)) == ("credit", D(3))
            for pool in (granted, rolled):
                assert pool.expires_at.ToDatetime(UTC) == term_end + timedelta(seconds=6)

            old = await client.call(
                client.contracts.GetContract, contract_pb2.GetContractRequest(contract_id=old_id)
            )
            assert old.contract.status == "ended"
            assert {c.pool_id: D(c.balance) for c in old.commitments} == {
                commit_id: 0,
                free_id: 0,
            }
        carried = await conn.fetch(
            "SELECT debit_account_id, credit_account_id, amount FROM transfers"
            " WHERE reference = $1",
            f"rollover:{old_id}",
        )
        assert [tuple(r) for r in carried] == [
            (pool_account_id(commit_id), pool_account_id(rolled.pool_id), D(3))
        ]
        for pool_id, amount in ((commit_id, D(7)), (free_id, D(1))):
            expired = await conn.fetch(
                "SELECT amount FROM transfers WHERE reference = $1", f"expiry:{pool_id}"
            )
            assert [r["amount"] for r in expired] == [amount]
        assert await _balance(conn, breakage_account_id(old_id)) == D(8)
        [announced] = await _outbox(conn, "contract.renewed", old_id)
        assert _payload(announced)["next_contract_id"] == next_id
        assert all(report.clean for report in (await reconcile(conn)).values())


async def test_a_contract_without_auto_renew_ends_after_its_final_invoice(
    settings: Settings, temporal_address: str, server: RunningServer, acme: TenantKeys
) -> None:
    async with database(settings) as conn:
        async with billing_stack(
            settings, temporal_address, server, acme, settlement_poll_seconds=0.2
        ) as stack:
            client, temporal = stack.client, stack.temporal
            contract = await open_billing_contract(
                client,
                "cus_leaves",
                period_seconds=4,
                periods=1,
                renewal={"auto_renew": False, "notice_seconds": 3},
            )
            await client.call(
                client.contracts.AddCommitment,
                contract_pb2.AddCommitmentRequest(
                    grant_id="unused", contract_id=contract.contract_id, kind="credit", amount="2"
                ),
            )
            renewal = temporal.get_workflow_handle(
                renewal_workflow_id(acme.tenant_id, contract.contract_id),
                result_type=SettlementResult,
            )
            # Notice first (the workflow has started), then the end after the final invoice.
            await eventually(
                lambda: _outbox_has(conn, "renewal.upcoming", contract.contract_id), 15
            )
            async with asyncio.timeout(30):
                settled = await renewal.result()
            assert (settled.state, D(settled.rolled_over), D(settled.breakage)) == (
                "ended",
                D(0),
                D(2),
            )

            with pytest.raises(NotFoundError):
                await client.call(
                    client.contracts.GetContract,
                    contract_pb2.GetContractRequest(contract_id=f"{contract.contract_id}.2"),
                )
        [upcoming] = await _outbox(conn, "renewal.upcoming", contract.contract_id)
        assert _payload(upcoming)["renews"] is False
        assert upcoming["created_at"] < contract.term_end
        [ended] = await _outbox(conn, "contract.ended", contract.contract_id)
        final = await conn.fetchrow(
            "SELECT issued_at FROM invoices WHERE contract_id = $1 AND billing_date = $2",
            contract.contract_id,
            contract.term_end,
        )
        assert final is not None and final["issued_at"] < ended["created_at"]
        status = await conn.fetchval(
            "SELECT status FROM contracts WHERE contract_id = $1", contract.contract_id
        )
        assert status == "ended"
        assert await _balance(conn, breakage_account_id(contract.contract_id)) == D(2)
        assert all(report.clean for report in (await reconcile(conn)).values())
