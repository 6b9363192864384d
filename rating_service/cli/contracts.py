"""`rating contracts` and `rating credits`: contracts, their billing, payment method and pools."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

import click

from rating_service.cli.api_client import api_call
from rating_service.cli.command_line import (
    parse_timestamp,
    tenant_option,
)
from rating_service.cli.tenant_services import contract_admin_call
from rating_service.core.auth import Caller
from rating_service.core.money import format_decimal

if TYPE_CHECKING:
    from rating_client.gen.rating.v1 import contract_pb2
    from rating_service.core.contracts.contract import Contract
    from rating_service.services.contract import ContractAdmin, Outcome
    from rating_service.store.contract import Commitment


@click.group()
def contracts() -> None:
    """Customers' contracts (operator commands, straight to the database)."""


@contracts.command("create")
@tenant_option
@click.option("--customer", "customer_id", required=True, help="The customer's id.")
@click.option("--rate-card", "rate_card_key", required=True, help="A rate card of the catalog.")
@click.option("--start", help="Term start, ISO 8601 with an offset (default: now).")
@click.option("--end", help="Term end, ISO 8601 with an offset (default: evergreen).")
@click.option("--anchor-day", type=click.IntRange(1, 31), help="Billing day (default: start's).")
@click.option(
    "--frequency",
    type=click.Choice(["monthly", "quarterly", "annual"]),
    default="monthly",
    show_default=True,
)
@click.option("--currency", default="USD", show_default=True, help="Invoice currency.")
@click.option(
    "--overage-policy",
    type=click.Choice(["block", "arrears"]),
    default="block",
    show_default=True,
    help="block refuses usage beyond the pools; arrears invoices it as overage.",
)
@click.option("--spend-cap", help="Most spend per billing period (default: no cap).")
def contracts_create(
    tenant_name: str,
    customer_id: str,
    rate_card_key: str,
    start: str | None,
    end: str | None,
    anchor_day: int | None,
    frequency: str,
    currency: str,
    overage_policy: str,
    spend_cap: str | None,
) -> None:
    """Create an active contract for a customer; prints its id."""
    term_start = parse_timestamp("--start", start) or datetime.now(UTC).replace(microsecond=0)
    terms = {
        "customer_id": customer_id,
        "term_start": term_start,
        "term_end": parse_timestamp("--end", end),
        # The anchor is in UTC, so "the start's day" is the day of the month there.
        "billing_anchor": {"day": anchor_day or term_start.astimezone(UTC).day},
        "billing_frequency": frequency,
        "invoice_currency": currency,
        "rate_card_key": rate_card_key,
        "overage_policy": overage_policy,
        "spend_cap": spend_cap,
    }
    contract: Contract = contract_admin_call(
        tenant_name, lambda admin, caller: admin.create_contract(caller, terms)
    )
    click.echo(contract.contract_id)


@contracts.command("list")
@tenant_option
@click.option("--customer", "customer_id", help="Only this customer's (default: all).")
def contracts_list(tenant_name: str, customer_id: str | None) -> None:
    """List contracts, by customer then term start."""
    found: list[Contract] = contract_admin_call(
        tenant_name, lambda admin, caller: admin.contracts(caller, customer_id)
    )
    for contract in found:
        click.echo(
            f"{contract.contract_id}  {contract.customer_id}  {_term(contract)}"
            f"  {contract.rate_card_key}  {contract.invoice_currency.code}  {contract.status}"
        )


@contracts.command("show")
@click.argument("contract_id")
@tenant_option
def contracts_show(contract_id: str, tenant_name: str) -> None:
    """Show a contract's terms and every commitment with its balance now."""
    shown: tuple[Contract, list[Commitment]] = contract_admin_call(
        tenant_name, lambda admin, caller: admin.contract(caller, contract_id)
    )
    contract, commitments = shown
    anchor = contract.billing_anchor
    cap = contract.spend_cap
    for label, value in [
        ("contract", contract.contract_id),
        ("customer", contract.customer_id),
        ("status", contract.status),
        ("term", _term(contract)),
        ("rate card", contract.rate_card_key),
        ("currency", contract.invoice_currency.code),
        ("billing", f"{contract.billing_frequency}, from day {anchor.day} at {anchor.time} UTC"),
        ("overage policy", contract.overage_policy),
        ("spend cap", "none" if cap is None else f"{format_decimal(cap)} per period"),
        ("overrides", len(contract.overrides)),
        ("alert thresholds", len(contract.alert_thresholds)),
    ]:
        click.echo(f"{label + ':':<18}{value}")
    click.echo(f"commitments: {len(commitments)}")
    for commitment in commitments:
        click.echo(f"  {_describe(commitment)}")


@contracts.command("cancel")
@click.argument("contract_id")
def contracts_cancel(contract_id: str) -> None:
    """End a contract now: its billing workflow ends the term and issues the final invoice.

    Through the API (`CancelContract`, an admin key).
    """
    api_call(lambda client: client.cancel_contract(contract_id), _BILLING_NEXT_STEPS)
    click.echo(f"asked {contract_id}'s billing cycle to cancel; `rating invoices list` shows it")


@contracts.command("bill-now")
@click.argument("contract_id")
def contracts_bill_now(contract_id: str) -> None:
    """Invoice a period that has ended without waiting out its grace window.

    Through the API (`BillNow`, an admin or ops key).
    """
    api_call(lambda client: client.bill_now(contract_id), _BILLING_NEXT_STEPS)
    click.echo(f"asked {contract_id}'s billing cycle to bill the ended period now")


@contracts.command("payment-method")
@click.argument("contract_id")
@click.option("--token", required=True, help="The payment method's token at the gateway.")
def contracts_payment_method(contract_id: str, token: str) -> None:
    """Save a contract's new payment method; invoices in dunning are retried with it at once.

    Through the API (`SetPaymentMethod`, an admin key).
    """
    changed: contract_pb2.SetPaymentMethodResponse = api_call(
        lambda client: client.set_payment_method(contract_id, token), _BILLING_NEXT_STEPS
    )
    click.echo(f"saved {token} as {changed.contract.contract_id}'s payment method")
    for invoice_id in changed.retried_invoice_ids:
        click.echo(f"retrying {invoice_id} now")


_BILLING_NEXT_STEPS = {
    "NO_BILLING_CYCLE": (
        "check the id with `rating contracts list --tenant NAME`, and that `rating worker` is"
        " running"
    ),
    "CONTRACT_NOT_FOUND": (
        "`rating contracts list --tenant NAME` lists the tenant's contracts; the contract must"
        " be one of the tenant of RATING_API_KEY"
    ),
    "TEMPORAL_UNAVAILABLE": (
        "nothing was changed: the server must reach Temporal for this (its RATING_TEMPORAL_ADDRESS)"
    ),
}


@click.group()
def credits() -> None:
    """Grants, top-ups and adjustments of contracts' pools, idempotent on their ids."""


@credits.command("grant")
@tenant_option
@click.option("--contract", "contract_id", required=True, help="The contract's id.")
@click.option("--amount", required=True, help="In the contract's currency, > 0.")
@click.option("--grant-id", required=True, help="Your idempotency key for this grant.")
@click.option(
    "--kind",
    type=click.Choice(["credit", "prepaid_commit", "postpaid_commit"]),
    default="credit",
    show_default=True,
)
@click.option("--priority", type=int, help="Drawn smaller first (default: 0).")
@click.option("--cost-basis", help="0 free to 1 face value (default: 0 credit, 1 commit).")
@click.option("--scope", multiple=True, help="A product key it pays for (repeat; default: all).")
@click.option("--starts", help="ISO 8601 with an offset (default: now).")
@click.option("--expires", help="ISO 8601 with an offset (default: never).")
@click.option("--memo", help="A note kept on the ledger transfers and in the audit log.")
def credits_grant(
    tenant_name: str,
    contract_id: str,
    amount: str,
    grant_id: str,
    kind: str,
    priority: int | None,
    cost_basis: str | None,
    scope: tuple[str, ...],
    starts: str | None,
    expires: str | None,
    memo: str | None,
) -> None:
    """Add a credit or commitment to a contract; the same --grant-id again is a replay."""
    request = {
        "grant_id": grant_id,
        "contract_id": contract_id,
        "kind": kind,
        "amount": amount,
        "priority": priority,
        "cost_basis": cost_basis,
        "scope": list(scope),
        "starts_at": parse_timestamp("--starts", starts),
        "expires_at": parse_timestamp("--expires", expires),
        "memo": memo,
    }
    outcome: Outcome = contract_admin_call(
        tenant_name, lambda admin, caller: admin.add_commitment(caller, request)
    )
    _echo_outcome(outcome, live=False)


@credits.command("top-up")
@tenant_option
@click.option("--contract", "contract_id", required=True, help="The contract's id.")
@click.option("--amount", required=True, help="In the contract's currency, > 0.")
@click.option("--top-up-id", required=True, help="Your idempotency key for this top-up.")
@click.option("--priority", type=int, help="Drawn smaller first (default: 0).")
@click.option("--cost-basis", help="What one unit cost the customer (default: 1).")
@click.option("--expires", help="ISO 8601 with an offset (default: never).")
@click.option("--memo", help="A note kept on the ledger transfers and in the audit log.")
def credits_top_up(
    tenant_name: str,
    contract_id: str,
    amount: str,
    top_up_id: str,
    priority: int | None,
    cost_basis: str | None,
    expires: str | None,
    memo: str | None,
) -> None:
    """Add bought credit to a contract; the same --top-up-id again is a replay."""
    request = {
        "top_up_id": top_up_id,
        "contract_id": contract_id,
        "amount": amount,
        "priority": priority,
        "cost_basis": cost_basis,
        "expires_at": parse_timestamp("--expires", expires),
        "memo": memo,
    }
    outcome: Outcome = contract_admin_call(
        tenant_name, lambda admin, caller: admin.top_up(caller, request)
    )
    _echo_outcome(outcome, live=False)


@credits.command("adjust")
@tenant_option
@click.option("--contract", "contract_id", required=True, help="The contract's id.")
@click.option("--pool", "pool_id", required=True, help="The pool's id (see contracts show).")
@click.option("--amount", required=True, help="Positive adds, negative removes (--amount=-5).")
@click.option("--adjustment-id", required=True, help="Your idempotency key for this change.")
@click.option("--reason", required=True, help="Why; kept on the ledger transfer and audited.")
def credits_adjust(
    tenant_name: str, contract_id: str, pool_id: str, amount: str, adjustment_id: str, reason: str
) -> None:
    """Add to or remove from a pool by hand; a removal never overdraws it."""
    from rating_service.core.errors import FailedPrecondition
    from rating_service.core.ledger.journal import INSUFFICIENT_CREDIT

    request = {
        "adjustment_id": adjustment_id,
        "contract_id": contract_id,
        "pool_id": pool_id,
        "amount": amount,
        "reason": reason,
    }

    async def adjust(admin: ContractAdmin, caller: Caller) -> Outcome:
        try:
            return await admin.adjust_balance(caller, request)
        except FailedPrecondition as refused:
            if refused.reason != INSUFFICIENT_CREDIT:
                raise
            # The ledger names accounts and transfers; an operator thinks in pools.
            balance = "; ".join(v.description for v in refused.violations)
            raise click.ClickException(
                f"insufficient credit in pool {pool_id}: {balance}; nothing changed"
            ) from refused

    _echo_outcome(contract_admin_call(tenant_name, adjust), live=True)


def _term(contract: Contract) -> str:
    end = "open" if contract.term_end is None else contract.term_end.isoformat()
    return f"{contract.term_start.isoformat()} – {end}"


def _describe(commitment: Commitment, *, live: bool = True) -> str:
    """One pool on one line, amounts exact; `live` when its balance is as it is now."""
    pool = commitment.pool
    scope = "all products" if pool.scope is None else ",".join(sorted(pool.scope))
    expires = "never" if pool.expires_at is None else pool.expires_at.isoformat()
    balance = (
        f"  balance {format_decimal(pool.balance)}  pending {format_decimal(pool.pending)}"
        if live
        else ""
    )
    return (
        f"{pool.pool_id}  {pool.kind}  original {format_decimal(pool.original_amount)}{balance}"
        f"  starts {pool.starts_at.isoformat()}  expires {expires}  scope {scope}"
        f"  priority {pool.priority}"
        f"  cost basis {format_decimal(pool.cost_basis)}  ({commitment.reference})"
    )


def _echo_outcome(outcome: Outcome, *, live: bool) -> None:
    """A write's commitment, said to be a replay when the same id was used before."""
    said = "replay" if outcome.replay else "done"
    click.echo(f"{said}: {_describe(outcome.commitment, live=live)}")
