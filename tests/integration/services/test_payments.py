"""The simulated gateway's payment methods, and collecting invoices through it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal

import asyncpg
import pytest

from rating_service.core.billing.invoice import InvoiceState
from rating_service.payments import (
    ChargeRequest,
    GatewayTimeout,
    SimulatedGateway,
    UnknownPaymentMethod,
)
from rating_service.runtime.bootstrap import ProcessRole, bootstrap
from rating_service.runtime.server import RunningServer
from rating_service.services.invoice import Collection
from rating_service.settings import Settings
from rating_service.store.database import asyncpg_dsn
from tests.conftest import TenantKeys
from tests.integration.cycles import admin_client, load_fee_catalog, open_billing_contract

D = Decimal


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    created = await asyncpg.create_pool(asyncpg_dsn(database_url), min_size=1, max_size=2)
    yield created
    await created.close()


def charge(key: str, method: str, reference: str = "inv_1") -> ChargeRequest:
    return ChargeRequest(key, method, D("12.50"), "USD", reference)


@pytest.mark.parametrize(
    ("method", "succeeded", "code"),
    [
        ("pm_ok", True, ""),
        ("pm_ok_visa", True, ""),
        ("pm_decline", False, "card_declined"),
        ("pm_insufficient_funds", False, "insufficient_funds"),
    ],
)
async def test_each_payment_method_answers_as_documented(
    pool: asyncpg.Pool, method: str, succeeded: bool, code: str
) -> None:
    outcome = await SimulatedGateway(pool).charge(charge("k1", method))
    assert (outcome.succeeded, outcome.decline_code) == (succeeded, code)
    assert outcome.gateway_reference.startswith("ch_sim_")


async def test_an_unknown_token_is_refused_and_charges_nothing(pool: asyncpg.Pool) -> None:
    with pytest.raises(UnknownPaymentMethod, match="pm_typo"):
        await SimulatedGateway(pool).charge(charge("k-typo", "pm_typo"))
    assert await pool.fetchval("SELECT count(*) FROM simulated_charges") == 0


async def test_a_retried_key_answers_the_first_outcome_and_charges_once(
    pool: asyncpg.Pool,
) -> None:
    gateway = SimulatedGateway(pool)
    first = await gateway.charge(charge("same-key", "pm_ok"))
    again = await gateway.charge(charge("same-key", "pm_ok"))
    assert again == first
    assert await pool.fetchval("SELECT count(*) FROM simulated_charges") == 1


async def test_fail_n_declines_n_charges_of_a_reference_then_succeeds(pool: asyncpg.Pool) -> None:
    gateway = SimulatedGateway(pool)
    outcomes = [await gateway.charge(charge(f"k{n}", "pm_fail_2")) for n in range(3)]
    assert [o.succeeded for o in outcomes] == [False, False, True]
    assert outcomes[0].decline_code == "processing_error"
    # Counted per reference: another invoice starts again.
    other = await gateway.charge(charge("k-other", "pm_fail_2", reference="inv_2"))
    assert not other.succeeded


async def test_a_timeout_raises_and_charges_nothing(pool: asyncpg.Pool) -> None:
    with pytest.raises(GatewayTimeout):
        await SimulatedGateway(pool, timeout_seconds=0.01).charge(charge("k1", "pm_timeout"))
    assert await pool.fetchval("SELECT count(*) FROM simulated_charges") == 0


async def test_collecting_records_each_attempt_and_a_decline_leaves_the_invoice_open(
    settings: Settings, server: RunningServer, acme: TenantKeys, pool: asyncpg.Pool
) -> None:
    await load_fee_catalog(settings.database_url or "", acme.tenant_id)
    async with admin_client(server, acme) as client:
        contract = await open_billing_contract(
            client, "cus_pay", period_seconds=60, periods=2, payment_method="pm_fail_1"
        )
    async with bootstrap(settings, ProcessRole.WORKER) as components:
        invoicing = components.invoicing
        tenant = acme.tenant_id
        opening = await invoicing.draft(tenant, contract.contract_id, contract.term_start)
        assert opening is not None  # the first period's fee, in advance
        await invoicing.finalize(tenant, opening.invoice_id)

        declined = await invoicing.collect(tenant, opening.invoice_id, attempt=1)
        assert (declined.outcome, declined.decline_code) == (
            Collection.DECLINED,
            "processing_error",
        )
        # The same attempt again is answered from the record: the gateway is not asked twice.
        assert (await invoicing.collect(tenant, opening.invoice_id, attempt=1)) == declined
        stored = await invoicing.invoices.invoice(tenant, opening.invoice_id)
        assert stored.state is InvoiceState.FINALIZED

        paid = await invoicing.collect(tenant, opening.invoice_id, attempt=2)
        assert paid.outcome is Collection.PAID
        settled = await invoicing.collect(tenant, opening.invoice_id, attempt=3)
        assert settled.outcome is Collection.ALREADY_SETTLED
        attempts = await invoicing.invoices.payment_attempts(tenant, opening.invoice_id)
        assert [(a.attempt, a.status, a.amount) for a in attempts] == [
            (1, "failed", D("12.00")),
            (2, "succeeded", D("12.00")),
        ]
        assert await pool.fetchval("SELECT count(*) FROM simulated_charges") == 2
