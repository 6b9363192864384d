"""Trials on a real worker, Temporal and PostgreSQL, with billing periods of a few seconds.

A free-usage trial's periods are invoiced with their usage shown and waived by a `trial` line;
usage after the trial is charged. `contract.trial_ending` reaches the tenant's webhook receiver
before the trial ends, `contract.trial_converted` when it ends. A trial-credit trial starts its
contract with a free credit pool expiring at the trial's end.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from rating_client.gen.rating.v1 import contract_pb2
from rating_service.core.auth import Role
from rating_service.outbox.topics import Topic
from rating_service.runtime.server import RunningServer
from rating_service.settings import Settings
from rating_service.workflows.billing import billing_workflow_id
from rating_service.workflows.trial import TrialWorkflow, trial_workflow_id
from tests.conftest import TenantKeys, eventually, refusal
from tests.integration.billing import CATALOG
from tests.integration.cycles import (
    admin_client,
    billing_stack,
    database,
    load_fee_catalog,
    open_billing_contract,
    record_history,
    sleep_until,
)
from tests.integration.workflows.test_notifications import open_notifications, receiving

D = Decimal
PERIOD = 6
"""Seconds in a billing period: the trial covers the first two of three."""


async def test_a_free_usage_trial_converts_and_is_announced_ahead(
    settings: Settings, temporal_address: str, server: RunningServer, acme: TenantKeys
) -> None:
    topics = [Topic.CONTRACT_TRIAL_ENDING.value, Topic.CONTRACT_TRIAL_CONVERTED.value]
    async with (
        receiving() as receiver,
        open_notifications(settings) as notifications,
        billing_stack(settings, temporal_address, server, acme, catalog=CATALOG) as stack,
    ):
        client, temporal = stack.client, stack.temporal
        added = await notifications.add_endpoint(
            acme.tenant_id, receiver.url("/trials"), topics, "test"
        )
        receiver.secrets["/trials"] = added.secret
        start = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=2)
        trial_end = start + timedelta(seconds=2 * PERIOD)
        contract = await open_billing_contract(
            client,
            "cus-trial",
            period_seconds=PERIOD,
            periods=3,
            # Given whole: the helper's own clock may tick to the next second meanwhile.
            term_start=start.isoformat(),
            term_end=(start + timedelta(seconds=3 * PERIOD)).isoformat(),
            # Announced 5 s ahead: during the second period.
            trial={"ends_at": trial_end.isoformat(), "mode": "free_usage", "notice_seconds": 5},
        )
        # 3 calls in the first period and 2 in the second (the trial), 4 in the third.
        for period, count in ((0, 3), (1, 2), (2, 4)):
            moment = start + timedelta(seconds=PERIOD * period + 0.2)
            await sleep_until(moment)
            for n in range(count):
                await client.rate_and_debit(
                    event_id=f"e{period}-{n}",
                    customer_id=contract.customer_id,
                    event_type="api.call",
                    properties={},
                    timestamp=moment,
                )
        trial = temporal.get_workflow_handle_for(
            TrialWorkflow.run, trial_workflow_id(acme.tenant_id, contract.contract_id)
        )
        assert await trial.result() == "converted"
        await record_history(
            temporal, trial_workflow_id(acme.tenant_id, contract.contract_id), "trial_converted"
        )
        billing = temporal.get_workflow_handle(
            billing_workflow_id(acme.tenant_id, contract.contract_id)
        )
        assert await billing.result() == "ended"

        def delivered() -> list[str]:
            return [r.json()["topic"] for r in receiver.at("/trials") if r.status == 200]

        await eventually(lambda: _ready(delivered(), topics), timeout_seconds=20)
        invoices = (await client.invoices(contract_id=contract.contract_id)).invoices

    received = {r.json()["topic"]: r.json()["data"] for r in receiver.at("/trials")}
    assert received[Topic.CONTRACT_TRIAL_ENDING.value] == {
        "contract_id": contract.contract_id,
        "ends_at": trial_end.isoformat(),
        "mode": "free_usage",
    }
    async with database(settings) as conn:
        written = {
            row["topic"]: row["created_at"]
            for row in await conn.fetch(
                "SELECT topic, created_at FROM outbox WHERE tenant_id = $1 AND topic = ANY($2)",
                acme.tenant_id,
                topics,
            )
        }
    # Sent ahead: 5 s before the end (give or take a timer's lateness), not at it.
    assert written[Topic.CONTRACT_TRIAL_ENDING.value] < trial_end - timedelta(seconds=3)
    assert written[Topic.CONTRACT_TRIAL_CONVERTED.value] >= trial_end

    by_period = {
        invoice.period_start.ToDatetime(UTC): invoice
        for invoice in invoices
        if invoice.period_end.ToDatetime(UTC) == invoice.billing_date.ToDatetime(UTC)
    }
    first, second, third = (by_period[start + timedelta(seconds=PERIOD * k)] for k in range(3))
    lines = [
        [(line.kind, line.amount) for line in invoice.lines] for invoice in (first, second, third)
    ]
    # The trial's usage is shown and waived: 3.00 and 2.00; the third period's 4 calls charged.
    assert lines == [
        [("usage", "3.00"), ("trial", "-3.00")],
        [("usage", "2.00"), ("trial", "-2.00")],
        [("usage", "4.00")],
    ]
    assert [invoice.total for invoice in (first, second, third)] == ["0.00", "0.00", "4.00"]


def _ready(delivered: list[str], topics: list[str]) -> bool:
    return sorted(set(delivered)) == sorted(topics)


async def test_a_trial_credit_is_a_free_pool_expiring_at_the_trial_end(
    settings: Settings, server: RunningServer, acme: TenantKeys
) -> None:
    await load_fee_catalog(settings.database_url or "", acme.tenant_id)
    async with admin_client(server, acme) as client:
        start = datetime.now(UTC).replace(microsecond=0)
        ends = start + timedelta(days=14)
        contract = await open_billing_contract(
            client,
            "cus-credit",
            period_seconds=3600,
            periods=24 * 30,
            trial={"ends_at": ends.isoformat(), "mode": "trial_credit", "credit": "25"},
        )
        got = await client.call(
            client.contracts.GetContract,
            contract_pb2.GetContractRequest(contract_id=contract.contract_id),
        )
        [pool] = got.commitments
        assert (pool.kind, pool.amount, pool.balance, pool.cost_basis) == (
            "credit",
            "25",
            "25",
            "0",
        )
        assert pool.expires_at.ToDatetime(UTC) == ends
        assert pool.starts_at.ToDatetime(UTC) == start
        assert got.contract.trial.mode == "trial_credit"

        # A free-usage trial not on a period boundary is refused, and no contract is made.
        await client.call(
            client.contracts.CreateCustomer,
            contract_pb2.CreateCustomerRequest(customer_id="cus-bad", name="Bad"),
        )
        terms = contract_pb2.Contract(
            customer_id="cus-bad",
            billing_frequency="monthly",
            invoice_currency="USD",
            rate_card_key="list",
            overage_policy="arrears",
            billing_interval_seconds=3600,
        )
        terms.billing_anchor.day = 1
        terms.term_start.FromDatetime(start)
        terms.trial.ends_at.FromDatetime(start + timedelta(minutes=30))
        terms.trial.mode = "free_usage"
        code, _, fields = await refusal(
            client.contracts.CreateContract(
                contract_pb2.CreateContractRequest(contract=terms),
                metadata=acme.metadata(Role.ADMIN),
            )
        )
        assert (code, fields) == ("INVALID_ARGUMENT", {"contract.trial.ends_at"})
        listed = await client.call(
            client.contracts.ListContracts,
            contract_pb2.ListContractsRequest(customer_id="cus-bad"),
        )
        assert list(listed.contracts) == []
