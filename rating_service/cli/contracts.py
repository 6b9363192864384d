"""`rating contracts` and `rating credits`: contracts, their billing, payment method and pools.

Through the API (`ContractService`), acting with RATING_API_KEY on its tenant: reads take any
key, changes an admin key (`bill-now` an ops key too).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import click

from rating_service.cli.api_client import api_call, moment
from rating_service.cli.command_line import parse_timestamp

if TYPE_CHECKING:
    from google.protobuf.timestamp_pb2 import Timestamp

    from rating_client import RatingClient
    from rating_client.gen.rating.v1 import contract_pb2

_CONTRACTS_LISTED = "`rating contracts list` lists the contracts of RATING_API_KEY's tenant"


@click.group()
def contracts() -> None:
    """Customers' contracts (through the API)."""


@contracts.command("create")
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
    """Create an active contract for a customer; prints its id (`CreateContract`)."""
    from google.protobuf import json_format

    from rating_client.gen.rating.v1 import contract_pb2

    term_start = parse_timestamp("--start", start) or datetime.now(UTC).replace(microsecond=0)
    term_end = parse_timestamp("--end", end)
    terms = {
        "customer_id": customer_id,
        "term_start": _wire_time(term_start),
        "term_end": None if term_end is None else _wire_time(term_end),
        # The anchor is in UTC, so "the start's day" is the day of the month there.
        "billing_anchor": {"day": anchor_day or term_start.astimezone(UTC).day},
        "billing_frequency": frequency,
        "invoice_currency": currency,
        "rate_card_key": rate_card_key,
        "overage_policy": overage_policy,
        "spend_cap": spend_cap,
    }
    message = json_format.ParseDict(_given(terms), contract_pb2.Contract())
    contract: contract_pb2.Contract = api_call(
        lambda client: client.create_contract(message),
        {"CUSTOMER_NOT_FOUND": "`rating customers list` lists the customers"},
    )
    click.echo(contract.contract_id)


@contracts.command("list")
@click.option("--customer", "customer_id", help="Only this customer's (default: all).")
def contracts_list(customer_id: str | None) -> None:
    """List contracts, by customer then term start (`ListContracts`)."""

    async def every_page(client: RatingClient) -> list[contract_pb2.Contract]:
        found: list[contract_pb2.Contract] = []
        token = ""
        while True:
            page = await client.contracts_of(customer_id or "", page_size=500, page_token=token)
            found += page.contracts
            token = page.next_page_token
            if not token:
                return found

    for contract in api_call(every_page):
        click.echo(
            f"{contract.contract_id}  {contract.customer_id}  {_term(contract)}"
            f"  {contract.rate_card_key}  {contract.invoice_currency}  {contract.status}"
        )


@contracts.command("show")
@click.argument("contract_id")
def contracts_show(contract_id: str) -> None:
    """Show a contract's terms and every commitment with its balance now (`GetContract`)."""
    shown: contract_pb2.GetContractResponse = api_call(
        lambda client: client.contract(contract_id), {"CONTRACT_NOT_FOUND": _CONTRACTS_LISTED}
    )
    contract = shown.contract
    anchor = contract.billing_anchor
    cap = f"{contract.spend_cap} per period" if contract.HasField("spend_cap") else "none"
    for label, value in [
        ("contract", contract.contract_id),
        ("customer", contract.customer_id),
        ("status", contract.status),
        ("term", _term(contract)),
        ("rate card", contract.rate_card_key),
        ("currency", contract.invoice_currency),
        (
            "billing",
            f"{contract.billing_frequency}, from day {anchor.day} at"
            f" {anchor.time or '00:00:00'} UTC",
        ),
        ("overage policy", contract.overage_policy),
        ("spend cap", cap),
        ("overrides", len(contract.overrides)),
        ("alert thresholds", len(contract.alert_thresholds)),
    ]:
        click.echo(f"{label + ':':<18}{value}")
    click.echo(f"commitments: {len(shown.commitments)}")
    for commitment in shown.commitments:
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
        "check the id with `rating contracts list`, and that `rating worker` is running"
    ),
    "CONTRACT_NOT_FOUND": _CONTRACTS_LISTED,
    "TEMPORAL_UNAVAILABLE": (
        "nothing was changed: the server must reach Temporal for this (its RATING_TEMPORAL_ADDRESS)"
    ),
}


@click.group()
def credits() -> None:
    """Grants, top-ups and adjustments of contracts' pools, idempotent on their ids (through the
    API: an admin key)."""


@credits.command("grant")
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
    """Add a credit or commitment to a contract; the same --grant-id again is a replay
    (`AddCommitment`)."""
    from rating_client.gen.rating.v1 import contract_pb2

    request = contract_pb2.AddCommitmentRequest(
        **_given(
            {
                "grant_id": grant_id,
                "contract_id": contract_id,
                "kind": kind,
                "amount": amount,
                "priority": priority,
                "cost_basis": cost_basis,
                "scope": list(scope),
                "starts_at": _timestamp(parse_timestamp("--starts", starts)),
                "expires_at": _timestamp(parse_timestamp("--expires", expires)),
                "memo": memo,
            }
        )
    )
    outcome: contract_pb2.AddCommitmentResponse = api_call(
        lambda client: client.add_commitment(request), _credit_next_steps("--grant-id")
    )
    _echo_outcome(outcome.commitment, outcome.replay, live=False)


@credits.command("top-up")
@click.option("--contract", "contract_id", required=True, help="The contract's id.")
@click.option("--amount", required=True, help="In the contract's currency, > 0.")
@click.option("--top-up-id", required=True, help="Your idempotency key for this top-up.")
@click.option("--priority", type=int, help="Drawn smaller first (default: 0).")
@click.option("--cost-basis", help="What one unit cost the customer (default: 1).")
@click.option("--expires", help="ISO 8601 with an offset (default: never).")
@click.option("--memo", help="A note kept on the ledger transfers and in the audit log.")
def credits_top_up(
    contract_id: str,
    amount: str,
    top_up_id: str,
    priority: int | None,
    cost_basis: str | None,
    expires: str | None,
    memo: str | None,
) -> None:
    """Add bought credit to a contract; the same --top-up-id again is a replay (`TopUp`)."""
    from rating_client.gen.rating.v1 import contract_pb2

    request = contract_pb2.TopUpRequest(
        **_given(
            {
                "top_up_id": top_up_id,
                "contract_id": contract_id,
                "amount": amount,
                "priority": priority,
                "cost_basis": cost_basis,
                "expires_at": _timestamp(parse_timestamp("--expires", expires)),
                "memo": memo,
            }
        )
    )
    outcome: contract_pb2.TopUpResponse = api_call(
        lambda client: client.top_up(request), _credit_next_steps("--top-up-id")
    )
    _echo_outcome(outcome.commitment, outcome.replay, live=False)


@credits.command("adjust")
@click.option("--contract", "contract_id", required=True, help="The contract's id.")
@click.option("--pool", "pool_id", required=True, help="The pool's id (see contracts show).")
@click.option("--amount", required=True, help="Positive adds, negative removes (--amount=-5).")
@click.option("--adjustment-id", required=True, help="Your idempotency key for this change.")
@click.option("--reason", required=True, help="Why; kept on the ledger transfer and audited.")
def credits_adjust(
    contract_id: str, pool_id: str, amount: str, adjustment_id: str, reason: str
) -> None:
    """Add to or remove from a pool by hand; a removal never overdraws it (`AdjustBalance`)."""
    from rating_client.gen.rating.v1 import contract_pb2

    request = contract_pb2.AdjustBalanceRequest(
        adjustment_id=adjustment_id,
        contract_id=contract_id,
        pool_id=pool_id,
        amount=amount,
        reason=reason,
    )
    next_steps = {
        **_credit_next_steps("--adjustment-id"),
        # The ledger names accounts and transfers; an operator thinks in pools.
        "INSUFFICIENT_CREDIT": (
            f"nothing changed: insufficient credit in pool {pool_id};"
            f" `rating contracts show {contract_id}` shows its balance"
        ),
    }
    outcome: contract_pb2.AdjustBalanceResponse = api_call(
        lambda client: client.adjust_balance(request), next_steps
    )
    _echo_outcome(outcome.commitment, outcome.replay, live=True)


def _credit_next_steps(id_option: str) -> dict[str, str]:
    """What to do about the refusals a write to a contract's pools may get."""
    return {
        "IDEMPOTENCY_KEY_MISMATCH": f"a different change needs a new {id_option}",
        "CONTRACT_NOT_FOUND": _CONTRACTS_LISTED,
    }


def _given(fields: dict[str, Any]) -> dict[str, Any]:
    """The fields an option set (None: left to the server's default)."""
    return {name: value for name, value in fields.items() if value is not None}


def _wire_time(at: datetime) -> str:
    """A moment as the API's JSON form of a Timestamp (RFC 3339, UTC)."""
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _timestamp(at: datetime | None) -> Timestamp | None:
    """A moment as a Timestamp; None stays unset."""
    if at is None:
        return None
    from google.protobuf.timestamp_pb2 import Timestamp

    message = Timestamp()
    message.FromDatetime(at.astimezone(UTC))
    return message


def _term(contract: contract_pb2.Contract) -> str:
    end = moment(contract.term_end) if contract.HasField("term_end") else "open"
    return f"{moment(contract.term_start)} – {end}"


def _describe(commitment: contract_pb2.Commitment, *, live: bool = True) -> str:
    """One pool on one line, amounts exact; `live` when its balance is as it is now."""
    scope = ",".join(sorted(commitment.scope)) or "all products"
    expires = moment(commitment.expires_at) if commitment.HasField("expires_at") else "never"
    balance = f"  balance {commitment.balance}  pending {commitment.pending}" if live else ""
    return (
        f"{commitment.pool_id}  {commitment.kind}  original {commitment.amount}{balance}"
        f"  starts {moment(commitment.starts_at)}  expires {expires}  scope {scope}"
        f"  priority {commitment.priority}"
        f"  cost basis {commitment.cost_basis}  ({commitment.reference})"
    )


def _echo_outcome(commitment: contract_pb2.Commitment, replay: bool, *, live: bool) -> None:
    """A write's commitment, said to be a replay when the same id was used before."""
    said = "replay" if replay else "done"
    click.echo(f"{said}: {_describe(commitment, live=live)}")
