"""Operator actions over the API: void and reissue, record a payment, a new payment method,
bill now and cancel — each refused to the wrong role and to another tenant, and changing
nothing on bad input; each idempotent."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from grpc import aio

from rating_client.gen.rating.v1 import (
    contract_pb2,
    contract_pb2_grpc,
    invoice_pb2,
    invoice_pb2_grpc,
)
from rating_service.core.auth import Role
from rating_service.core.billing.invoice import InvoiceState, invoice_id_for
from rating_service.core.errors import NotFound
from rating_service.runtime.server import RunningServer, start_server
from rating_service.settings import Settings
from rating_service.workflows.billing import billing_workflow_id
from tests.conftest import TenantKeys, eventually, refusal
from tests.integration.cycles import (
    BillingStack,
    billing_stack,
    open_billing_contract,
    open_invoicing,
    workflow_started,
)

PERIOD = 30
"""Seconds per billing period: nothing but the operators' actions invoices during a test."""


@asynccontextmanager
async def operator_stack(
    settings: Settings, temporal_address: str, server: RunningServer, acme: TenantKeys
) -> AsyncIterator[tuple[BillingStack, aio.Channel]]:
    """A worker, and a server that knows its Temporal and task queue, with a channel to it."""
    async with billing_stack(
        settings, temporal_address, server, acme, invoice_grace_seconds=600.0
    ) as stack:
        running = await start_server(stack.worker_config)
        try:
            async with aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
                yield stack, channel
        finally:
            await running.stop(0.5)


async def test_void_and_reissue_and_record_a_payment_through_the_api(
    settings: Settings,
    temporal_address: str,
    server: RunningServer,
    acme: TenantKeys,
    globex: TenantKeys,
) -> None:
    async with operator_stack(settings, temporal_address, server, acme) as (stack, channel):
        invoices = invoice_pb2_grpc.InvoiceServiceStub(channel)
        ops, rater = acme.metadata(Role.OPS), acme.metadata(Role.RATER)
        # No payment method: the opening invoice (the fee in advance) stays issued, unpaid.
        contract = await open_billing_contract(
            stack.client, "cus_operator", period_seconds=PERIOD, periods=10, payment_method=""
        )
        opening = invoice_id_for(contract.contract_id, contract.term_start, 0)
        async with open_invoicing(settings) as invoicing:

            async def issued(invoice_id: str) -> bool:
                try:
                    found = await invoicing.invoices.invoice(acme.tenant_id, invoice_id)
                except NotFound:
                    return False
                return found.state is InvoiceState.FINALIZED

            await eventually(lambda: issued(opening), timeout_seconds=30)

            void = invoice_pb2.VoidInvoiceRequest
            for call, expected in (
                (invoices.VoidInvoice(void(invoice_id=opening), metadata=ops), ("reason",)),
                (invoices.VoidInvoice(void(reason="typo"), metadata=ops), ("invoice_id",)),
            ):
                code, _, fields = await refusal(call)
                assert (code, fields) == ("INVALID_ARGUMENT", set(expected))
            request = void(invoice_id=opening, reason="fee typo", regenerate=True)
            assert (await refusal(invoices.VoidInvoice(request, metadata=rater)))[0] == (
                "PERMISSION_DENIED"
            )
            other = globex.metadata(Role.OPS)
            assert (await refusal(invoices.VoidInvoice(request, metadata=other)))[:2] == (
                "NOT_FOUND",
                "INVOICE_NOT_FOUND",
            )
            unchanged = await invoicing.invoices.invoice(acme.tenant_id, opening)
            assert unchanged.state is InvoiceState.FINALIZED  # the refusals changed nothing

            voided = await invoices.VoidInvoice(request, metadata=ops)
            assert voided.invoice.state == "void" and voided.invoice.number == "INV-000001"
            assert voided.revision_workflow_id.endswith("/r1")
            again = await invoices.VoidInvoice(request, metadata=ops)  # idempotent
            assert again.invoice == voided.invoice
            assert again.revision_workflow_id == voided.revision_workflow_id
            revision = f"{opening}-r1"
            await eventually(lambda: issued(revision), timeout_seconds=30)
            reissued = await invoicing.invoices.invoice(acme.tenant_id, revision)
            assert reissued.number == "INV-000002"  # a new number, never the voided one

            pay = invoice_pb2.RecordPaymentRequest(invoice_id=revision, reference="wire 42")
            code, _, fields = await refusal(
                invoices.RecordPayment(
                    invoice_pb2.RecordPaymentRequest(invoice_id=revision, reference=" "),
                    metadata=ops,
                )
            )
            assert (code, fields) == ("INVALID_ARGUMENT", {"reference"})
            paid = await invoices.RecordPayment(pay, metadata=ops)
            assert (paid.invoice.state, paid.contract_status) == ("paid", "active")
            assert (await invoices.RecordPayment(pay, metadata=ops)).invoice == paid.invoice


async def test_payment_method_bill_now_and_cancel_through_the_api(
    settings: Settings,
    temporal_address: str,
    server: RunningServer,
    acme: TenantKeys,
    globex: TenantKeys,
) -> None:
    async with operator_stack(settings, temporal_address, server, acme) as (stack, channel):
        contracts = contract_pb2_grpc.ContractServiceStub(channel)
        admin, ops = acme.metadata(Role.ADMIN), acme.metadata(Role.OPS)
        contract = await open_billing_contract(
            stack.client, "cus_actions", period_seconds=PERIOD, periods=10, payment_method=""
        )
        contract_id = contract.contract_id

        method = contract_pb2.SetPaymentMethodRequest
        code, _, fields = await refusal(
            contracts.SetPaymentMethod(
                method(contract_id=contract_id, payment_method="pm with spaces"), metadata=admin
            )
        )
        assert (code, fields) == ("INVALID_ARGUMENT", {"payment_method"})
        assert (
            await refusal(
                contracts.SetPaymentMethod(
                    method(contract_id=contract_id, payment_method="pm_ok"), metadata=ops
                )
            )
        )[0] == "PERMISSION_DENIED"
        saved = await contracts.SetPaymentMethod(
            method(contract_id=contract_id, payment_method="pm_ok"), metadata=admin
        )
        assert saved.contract.payment_method == "pm_ok"
        assert list(saved.retried_invoice_ids) == []  # nothing in dunning

        cancel = contract_pb2.CancelContractRequest(contract_id=contract_id)
        assert (await refusal(contracts.CancelContract(cancel, metadata=ops)))[0] == (
            "PERMISSION_DENIED"
        )
        assert (
            await refusal(contracts.CancelContract(cancel, metadata=globex.metadata(Role.ADMIN)))
        )[:2] == ("NOT_FOUND", "CONTRACT_NOT_FOUND")
        code, _, fields = await refusal(
            contracts.BillNow(contract_pb2.BillNowRequest(), metadata=ops)
        )
        assert (code, fields) == ("INVALID_ARGUMENT", {"contract_id"})

        handle = stack.temporal.get_workflow_handle(
            billing_workflow_id(acme.tenant_id, contract_id)
        )
        await eventually(lambda: workflow_started(handle), timeout_seconds=30)
        await contracts.BillNow(contract_pb2.BillNowRequest(contract_id=contract_id), metadata=ops)
        await contracts.CancelContract(cancel, metadata=admin)
        async with asyncio.timeout(60):
            assert await handle.result() == "ended"
        code, reason, _ = await refusal(contracts.CancelContract(cancel, metadata=admin))
        assert (code, reason) == ("FAILED_PRECONDITION", "NO_BILLING_CYCLE")


async def test_retry_a_payment_now_through_the_api(
    settings: Settings,
    temporal_address: str,
    server: RunningServer,
    acme: TenantKeys,
    globex: TenantKeys,
) -> None:
    async with operator_stack(settings, temporal_address, server, acme) as (stack, channel):
        invoices = invoice_pb2_grpc.InvoiceServiceStub(channel)
        ops = acme.metadata(Role.OPS)
        # The first charge of the opening invoice is declined; dunning would wait a day.
        contract = await open_billing_contract(
            stack.client, "cus_retry", period_seconds=PERIOD, periods=10, payment_method="pm_fail_1"
        )
        opening = invoice_id_for(contract.contract_id, contract.term_start, 0)
        async with open_invoicing(settings) as invoicing:

            async def attempts() -> list[str]:
                try:
                    found = await invoicing.payment_attempts(acme.tenant_id, opening)
                except NotFound:
                    return []
                return [a.status for a in found]

            async def declined_once() -> bool:
                return await attempts() == ["failed"]

            await eventually(declined_once, timeout_seconds=30)

            retry = invoice_pb2.RetryPaymentRequest
            code, _, fields = await refusal(invoices.RetryPayment(retry(), metadata=ops))
            assert (code, fields) == ("INVALID_ARGUMENT", {"request_id", "invoice_id"})
            request = retry(request_id="retry-1", invoice_id=opening)
            assert (
                await refusal(invoices.RetryPayment(request, metadata=acme.metadata(Role.RATER)))
            )[0] == "PERMISSION_DENIED"
            assert (
                await refusal(invoices.RetryPayment(request, metadata=globex.metadata(Role.OPS)))
            )[:2] == ("NOT_FOUND", "INVOICE_NOT_FOUND")
            assert await attempts() == ["failed"]  # the refusals tried nothing

            retried = await invoices.RetryPayment(request, metadata=ops)
            assert (retried.replay, retried.workflow_id) == (
                False,
                f"dunning/{acme.tenant_id}/{opening}",
            )

            async def paid() -> bool:
                found = await invoicing.invoices.invoice(acme.tenant_id, opening)
                return found.state is InvoiceState.PAID

            await eventually(paid, timeout_seconds=30)
            assert await attempts() == ["failed", "succeeded"]  # attempt 2, at once
            again = await invoices.RetryPayment(request, metadata=ops)
            assert (again.replay, again.workflow_id) == (True, retried.workflow_id)
            code, reason, _ = await refusal(
                invoices.RetryPayment(retry(request_id="retry-2", invoice_id=opening), metadata=ops)
            )
            assert (code, reason) == ("FAILED_PRECONDITION", "INVOICE_NOT_OPEN")
            assert await attempts() == ["failed", "succeeded"]  # never charged twice
