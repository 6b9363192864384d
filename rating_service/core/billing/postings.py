"""What an invoice moves in the ledger when it is finalized, voided or paid.

Usage revenue was recognised when each event was rated (pool → revenue, or overage receivable
→ revenue); finalizing an invoice moves what it bills into the contract's receivable: the
period's overage, each fee from its product's revenue, each commit from payments clearing, the
true-up from its own revenue account, and the rounding of the lines. So the receivable always
holds exactly the finalized, unpaid invoice totals.
"""

from __future__ import annotations

from decimal import Decimal, localcontext

from rating_service.core.billing.credit_note import CreditNote
from rating_service.core.billing.invoice import Invoice, LineKind
from rating_service.core.ledger.accounts import (
    AccountKind,
    cash_account_id,
    overage_account_id,
    payments_clearing_account_id,
    receivable_account_id,
    revenue_account_id,
    rounding_account_id,
)
from rating_service.core.ledger.posting_rules import credit_note_transfers, invoice_transfers
from rating_service.core.ledger.transfers import Transfer
from rating_service.core.money import EXACT_CONTEXT

TRUE_UP_REVENUE = "true-up"
"""The product key of the revenue account that earns postpaid true-ups."""


def invoice_reference(invoice_id: str) -> str:
    """The reference every transfer of an invoice carries."""
    return f"invoice:{invoice_id}"


def finalization_transfers(invoice: Invoice) -> tuple[Transfer, ...]:
    """The transfers that move a finalized invoice's charges into the receivable."""
    contract = invoice.contract_id
    charges: dict[str, Decimal] = {}
    with localcontext(EXACT_CONTEXT):
        for line in invoice.lines:
            if line.kind in (LineKind.USAGE, LineKind.DISCOUNT, LineKind.CREDIT):
                # Usage less its capped part less credits is the overage the events accrued.
                account = overage_account_id(contract)
            elif line.kind in (LineKind.FEE, LineKind.MINIMUM_SPEND):
                account = revenue_account_id(contract, line.product_key)
            elif line.kind is LineKind.COMMIT:
                account = payments_clearing_account_id(contract)
            else:
                account = revenue_account_id(contract, TRUE_UP_REVENUE)
            charges[account] = charges.get(account, Decimal(0)) + line.exact_amount
        charges[rounding_account_id(contract)] = invoice.total - invoice.exact_total
    return invoice_transfers(
        reference=invoice_reference(invoice.invoice_id),
        contract_id=contract,
        charges=charges.items(),
    )


def credit_note_reference(credit_note_id: str) -> str:
    """The reference every transfer of a credit note (and of its refund) carries."""
    return f"credit_note:{credit_note_id}"


def credited_account(contract_id: str, kind: LineKind, product_key: str) -> str:
    """The account a credited line reverses.

    Usage, fees and minimum spend lower their product's revenue (usage revenue was earned
    when the events were rated, so its overage account, settled by the invoice, is left
    alone); a commit goes back to the payments clearing its charge credited; a true-up to
    its own revenue.
    """
    if kind in (LineKind.USAGE, LineKind.FEE, LineKind.MINIMUM_SPEND):
        return revenue_account_id(contract_id, product_key)
    if kind is LineKind.COMMIT:
        return payments_clearing_account_id(contract_id)
    return revenue_account_id(contract_id, TRUE_UP_REVENUE)


def issue_transfers(note: CreditNote) -> tuple[Transfer, ...]:
    """The transfers that take a credit note's lines back out of the receivable."""
    credits: dict[str, Decimal] = {}
    with localcontext(EXACT_CONTEXT):
        for line in note.lines:
            account = credited_account(note.contract_id, line.kind, line.product_key)
            credits[account] = credits.get(account, Decimal(0)) + line.amount
    return credit_note_transfers(
        reference=credit_note_reference(note.credit_note_id),
        contract_id=note.contract_id,
        credits=credits.items(),
    )


def credit_note_accounts(note: CreditNote) -> list[tuple[str, AccountKind, str | None]]:
    """The revenue accounts a credit note debits (opened by rating or finalization, or now)."""
    return [
        (revenue_account_id(note.contract_id, key), AccountKind.REVENUE, key)
        for key in sorted(
            {
                line.product_key if line.kind is not LineKind.TRUE_UP else TRUE_UP_REVENUE
                for line in note.lines
                if line.kind is not LineKind.COMMIT
            }
        )
    ]


def invoice_accounts(invoice: Invoice) -> list[tuple[str, AccountKind, str | None]]:
    """The accounts an invoice's transfers may touch that a contract does not open up front."""
    contract = invoice.contract_id
    wanted: list[tuple[str, AccountKind, str | None]] = [
        (receivable_account_id(contract), AccountKind.RECEIVABLE, None),
        (rounding_account_id(contract), AccountKind.ROUNDING, None),
        (cash_account_id(contract), AccountKind.CASH, None),
        (revenue_account_id(contract, TRUE_UP_REVENUE), AccountKind.REVENUE, TRUE_UP_REVENUE),
    ]
    fees = sorted(
        {
            line.product_key
            for line in invoice.lines
            if line.kind in (LineKind.FEE, LineKind.MINIMUM_SPEND)
        }
    )
    wanted.extend((revenue_account_id(contract, key), AccountKind.REVENUE, key) for key in fees)
    return wanted
