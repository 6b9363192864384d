"""The invoice steps on a real database, without Temporal: idempotent, gapless, correctable."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from rating_service.core.billing.dunning import reinstatement_on_payment
from rating_service.core.billing.invoice import INVOICE_STATE_CONFLICT, InvoiceState
from rating_service.core.errors import FailedPrecondition, InvalidArgument
from rating_service.core.ledger.accounts import receivable_account_id
from rating_service.runtime.server import RunningServer
from rating_service.settings import Settings
from rating_service.store.ledger import reconcile
from tests.conftest import TenantKeys
from tests.integration.cycles import (
    admin_client,
    database,
    load_fee_catalog,
    open_billing_contract,
    open_invoicing,
)

D = Decimal


async def test_finalize_is_idempotent_and_a_voided_invoice_is_replaced_by_a_revision(
    settings: Settings, server: RunningServer, acme: TenantKeys
) -> None:
    await load_fee_catalog(settings.database_url or "", acme.tenant_id)
    async with admin_client(server, acme) as client:
        contract = await open_billing_contract(
            client,
            "cus_void",
            period_seconds=60,
            periods=2,
            starts_in=timedelta(seconds=-70),  # the first period has ended
        )
        await client.rate_and_debit(
            event_id="v1",
            customer_id=contract.customer_id,
            event_type="api.call",
            properties={},
            timestamp=contract.term_start + timedelta(seconds=5),
        )
    first_end = contract.term_start + timedelta(seconds=60)
    async with open_invoicing(settings) as invoicing:
        tenant, contract_id = acme.tenant_id, contract.contract_id
        await invoicing.close_period(tenant, contract_id, first_end)
        draft = await invoicing.draft(tenant, contract_id, first_end)
        assert draft is not None and draft.state is InvoiceState.DRAFT
        again = await invoicing.draft(tenant, contract_id, first_end)
        assert again == draft  # a retried draft recomposes the same invoice
        final = await invoicing.finalize(tenant, draft.invoice_id)
        assert await invoicing.finalize(tenant, draft.invoice_id) == final
        assert final.number == "INV-000001"
        # 1 call at $1 in arrears + the next period's $12 fee in advance.
        assert final.total == D("13.00")

        with pytest.raises(InvalidArgument):
            await invoicing.void(tenant, final.invoice_id, "ops@acme", " ")
        voided = await invoicing.void(tenant, final.invoice_id, "ops@acme", "wrong fee")
        assert (voided.state, voided.number) == (InvoiceState.VOID, "INV-000001")
        # A late retry of the finalize step finds the voided invoice and changes nothing.
        assert await invoicing.finalize(tenant, voided.invoice_id) == voided
        assert await invoicing.void(tenant, final.invoice_id, "ops@acme", "again") == voided

        redraft = await invoicing.draft(tenant, contract_id, first_end, revision=1)
        assert redraft is not None and redraft.invoice_id.endswith("-r1")
        reissued = await invoicing.finalize(tenant, redraft.invoice_id)
        assert (reissued.number, reissued.total) == ("INV-000002", D("13.00"))
        # Paid by other means (a bank transfer): a paid invoice is corrected by a credit.
        await invoicing.invoices.paid(
            tenant,
            reissued.invoice_id,
            None,
            "wire",
            final.billing_date,
            reinstatement_on_payment,
        )
        with pytest.raises(FailedPrecondition) as refused:
            await invoicing.void(tenant, reissued.invoice_id, "ops@acme", "too late")
        assert refused.value.reason == INVOICE_STATE_CONFLICT

        async with database(settings) as conn:
            receivable = await conn.fetchval(
                "SELECT debits_posted - credits_posted FROM accounts WHERE account_id = $1",
                receivable_account_id(contract_id),
            )
            assert receivable == 0  # the voided invoice reversed, the revision paid
            audit = await conn.fetchval(
                "SELECT details->>'reason' FROM audit_log WHERE action = 'invoice.void'"
            )
            assert audit == "wrong fee"
            assert all(report.clean for report in (await reconcile(conn)).values())
