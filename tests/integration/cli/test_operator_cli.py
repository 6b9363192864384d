"""The operator commands act through the API: the key decides the tenant and the role, and a
refusal is printed as the server gave it (status, reason, fields, what to do next), exit 1."""

from __future__ import annotations

import asyncio

from click.testing import CliRunner, Result

from rating_service.cli import main
from rating_service.core.auth import Role
from rating_service.core.billing.invoice import Invoice, InvoiceState
from rating_service.runtime.server import RunningServer
from rating_service.settings import Settings
from tests.conftest import TenantKeys
from tests.integration.cycles import (
    admin_client,
    api_env,
    load_fee_catalog,
    open_billing_contract,
    open_invoicing,
)

PERIOD = 600
"""Seconds: no worker runs, so nothing but the test issues an invoice."""


async def rating(env: dict[str, str], *args: str) -> Result:
    """`rating ARGS…` with this environment, in a thread (the server runs on this loop)."""
    return await asyncio.to_thread(CliRunner().invoke, main, list(args), env=env)


async def refused(env: dict[str, str], *args: str) -> list[str]:
    """The lines of a command that must be refused: a click error, exit 1."""
    result = await rating(env, *args)
    assert result.exit_code == 1, result.output
    assert result.output.startswith("Error: "), result.output
    return result.output.splitlines()


async def issued_invoice(settings: Settings, server: RunningServer, acme: TenantKeys) -> Invoice:
    """A contract of acme's and its opening invoice, issued by calling the invoicing steps."""
    await load_fee_catalog(settings.database_url or "", acme.tenant_id)
    async with admin_client(server, acme) as client:
        contract = await open_billing_contract(
            client, "cus_cli", period_seconds=PERIOD, periods=2, payment_method=""
        )
    async with open_invoicing(settings) as invoicing:
        tenant, billing_date = acme.tenant_id, contract.term_start
        await invoicing.close_period(tenant, contract.contract_id, billing_date)
        draft = await invoicing.draft(tenant, contract.contract_id, billing_date)
        assert draft is not None
        return await invoicing.finalize(tenant, draft.invoice_id)


async def state_of(settings: Settings, tenant_id: str, invoice_id: str) -> InvoiceState:
    async with open_invoicing(settings) as invoicing:
        return (await invoicing.invoices.invoice(tenant_id, invoice_id)).state


async def test_an_invoice_is_voided_and_paid_by_its_tenant_s_key_and_no_other(
    settings: Settings, server: RunningServer, acme: TenantKeys, globex: TenantKeys
) -> None:
    invoice = await issued_invoice(settings, server, acme)
    void = ("invoices", "void", invoice.invoice_id, "--reason", "fee typo")

    # Another tenant's key: its tenant has no such invoice, and nothing changes.
    other = await refused(api_env(server, globex.tokens[Role.ADMIN]), *void)
    assert other[0] == f"Error: no invoice {invoice.invoice_id!r}"
    assert "  status: NOT_FOUND INVOICE_NOT_FOUND" in other
    assert other[-1] == (
        "  next: `rating invoices list` lists the invoices of RATING_API_KEY's tenant"
    )
    # A rater key may not void: the role is named, and what to do about it.
    rater = await refused(api_env(server, acme.tokens[Role.RATER]), *void)
    assert rater[0].startswith("Error: this call needs the admin, ops role; the key key_")
    assert rater[0].endswith("has rater")
    assert "  status: PERMISSION_DENIED ROLE_NOT_ALLOWED" in rater
    assert rater[-1].startswith("  next: set RATING_API_KEY to a key of the tenant with a role")
    # Bad input: the field at fault, as the server named it.
    ops = api_env(server, acme.tokens[Role.OPS])
    blank = await refused(ops, "invoices", "void", invoice.invoice_id, "--reason", " ")
    assert blank[1].startswith("  status: INVALID_ARGUMENT")
    assert any(line.startswith("  field reason: ") for line in blank), blank
    assert await state_of(settings, acme.tenant_id, invoice.invoice_id) is InvoiceState.FINALIZED

    voided = await rating(ops, *void)
    assert voided.exit_code == 0, voided.output
    assert voided.output == f"voided {invoice.invoice_id} ({invoice.number})\n"
    assert await state_of(settings, acme.tenant_id, invoice.invoice_id) is InvoiceState.VOID
    again = await rating(ops, *void)  # voiding a void invoice answers it again
    assert again.output == voided.output


async def test_the_commands_say_what_to_set_when_the_key_or_server_is_wrong(
    server: RunningServer, acme: TenantKeys
) -> None:
    void = ("invoices", "void", "inv_nope", "--reason", "typo")
    missing = await refused({"RATING_API_KEY": ""}, *void)
    assert missing[0].startswith("Error: RATING_API_KEY is not set: operator commands act")

    forged = api_env(server, "key_nobody.not-a-secret")
    unknown = await refused(forged, *void)
    assert unknown[0] == "Error: the API key is unknown or revoked"
    assert "  status: UNAUTHENTICATED INVALID_API_KEY" in unknown
    assert unknown[-1].startswith("  next: set RATING_API_KEY to a key of the tenant")

    nowhere = {"RATING_API_ADDRESS": "127.0.0.1:1", "RATING_API_KEY": acme.tokens[Role.OPS]}
    down = await refused(nowhere, *void)
    assert "  status: UNAVAILABLE" in down
    assert down[-1] == (
        "  next: is `rating serve` (or `rating dev`) running at 127.0.0.1:1?"
        " RATING_API_ADDRESS says where it listens"
    )

    # An unknown contract: the server's answer, and where to look for the right id.
    admin = api_env(server, acme.tokens[Role.ADMIN])
    for command in ("cancel", "bill-now"):
        lines = await refused(admin, "contracts", command, "ctr_nope")
        assert lines[0] == "Error: no contract 'ctr_nope'"
        assert "  status: NOT_FOUND CONTRACT_NOT_FOUND" in lines
        assert lines[-1] == (
            "  next: `rating contracts list` lists the contracts of RATING_API_KEY's tenant"
        )


async def test_a_payment_needs_a_server_that_reaches_temporal_and_changes_nothing_without(
    settings: Settings, server: RunningServer, acme: TenantKeys
) -> None:
    # The test's server knows no Temporal: the invoice's dunning could not hear of a payment.
    invoice = await issued_invoice(settings, server, acme)
    ops = api_env(server, acme.tokens[Role.OPS])
    lines = await refused(ops, "invoices", "pay", invoice.invoice_id, "--reference", "W-1")
    assert "RATING_TEMPORAL_ADDRESS is not set" in lines[0]
    assert "  status: FAILED_PRECONDITION TEMPORAL_UNAVAILABLE" in lines
    assert lines[-1].startswith("  next: nothing was changed: the server must reach Temporal")
    assert await state_of(settings, acme.tenant_id, invoice.invoice_id) is InvoiceState.FINALIZED
