"""Builders for the billing tests: contracts, a small catalog, pools and billing dates."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from rating_service.core.billing.compose import InvoiceInputs, UsageTotal
from rating_service.core.billing.invoice import Invoice, InvoiceLine, LineKind
from rating_service.core.billing.schedule import BillingDate, billing_date, next_billing_date
from rating_service.core.contracts import (
    BillingAnchor,
    BillingFrequency,
    CommitmentKind,
    Contract,
    OveragePolicy,
    Override,
    Pool,
)
from rating_service.core.money import currency_of
from rating_service.core.pricing.catalog import Catalog, catalog_from_document

D = Decimal


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    """A moment in UTC."""
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


T0 = utc(2025, 1, 1)
"""The start of most test contracts' terms, and of the catalog's first rate card version."""

ON_THE_FIRST = BillingAnchor(1)

# A product per price model the composer treats differently.
PRODUCTS: list[dict[str, object]] = [
    {
        "key": "tokens",
        "name": "LLM tokens",
        "meter": {"event_type": "llm", "quantity_property": "n"},
    },
    {
        "key": "gpu-hours",
        "name": "GPU hours",
        "meter": {"event_type": "gpu", "quantity_property": "hours"},
    },
    {
        "key": "images",
        "name": "Images",
        "meter": {"event_type": "image", "dimensions": ["quality"]},
    },
    {"key": "platform", "name": "Platform fee", "meter": {"event_type": "platform.in_advance"}},
    {"key": "support", "name": "Support plan", "meter": {"event_type": "platform.in_arrears"}},
]

STRIPE_GRADUATED = {
    "model": "graduated",
    "tiers": [
        {"up_to": "5", "unit_price": "7"},
        {"up_to": "10", "unit_price": "6.50"},
        {"up_to": None, "unit_price": "6"},
    ],
}
"""Stripe's documented example: units 1–5 at $7, 6–10 at $6.50, 11+ at $6."""


def prices(
    *,
    token_price: str = "0.000002",
    platform_fee: str = "310.00",
    support_fee: str = "90.00",
) -> dict[str, object]:
    """The prices of one rate card version: a fee in advance, a fee in arrears, usage prices."""
    return {
        "tokens": {"model": "per_unit", "unit_price": token_price},
        "gpu-hours": STRIPE_GRADUATED,
        "images": {
            "model": "matrix",
            "dimensions": ["quality"],
            "cells": [
                {
                    "match": {"quality": "standard"},
                    "price": {"model": "per_unit", "unit_price": "0.04"},
                },
                {"match": {"quality": "hd"}, "price": {"model": "per_unit", "unit_price": "0.08"}},
            ],
        },
        "platform": {"model": "flat_fee", "amount": platform_fee, "timing": "in_advance"},
        "support": {"model": "flat_fee", "amount": support_fee, "timing": "in_arrears"},
    }


def version(
    number: int,
    start: datetime,
    until: datetime | None = None,
    *,
    pricing_unit: object = "USD",
    **price_changes: str,
) -> dict[str, object]:
    """The document form of one version of rate card `standard`."""
    return {
        "key": "standard",
        "version": number,
        "effective_from": start.isoformat(),
        "effective_until": None if until is None else until.isoformat(),
        "pricing_unit": pricing_unit,
        "prices": prices(**price_changes),
    }


def a_catalog(*versions: Mapping[str, object]) -> Catalog:
    """The test catalog with these versions of rate card `standard` (default: one, from 2020)."""
    cards = list(versions) or [version(1, utc(2020, 1, 1))]
    return catalog_from_document({"products": PRODUCTS, "rate_cards": cards})


CATALOG = a_catalog()


def a_contract(
    *,
    term_start: datetime = T0,
    term_end: datetime | None = None,
    anchor: BillingAnchor = ON_THE_FIRST,
    frequency: BillingFrequency = BillingFrequency.MONTHLY,
    interval: timedelta | None = None,
    overrides: tuple[Override, ...] = (),
    currency: str = "USD",
) -> Contract:
    """Contract `ctr_1` on rate card `standard`, evergreen and monthly on the 1st unless told."""
    return Contract(
        "ctr_1",
        "cus_1",
        "tnt_1",
        term_start,
        term_end,
        anchor,
        frequency,
        currency_of(currency),
        "standard",
        OveragePolicy.ARREARS,
        overrides,
        billing_interval=interval,
    )


def a_pool(
    pool_id: str,
    amount: str = "100",
    *,
    kind: CommitmentKind = CommitmentKind.CREDIT,
    cost_basis: str = "0",
    scope: frozenset[str] | None = None,
    starts_at: datetime = T0,
    expires_at: datetime | None = None,
    created_seq: int = 0,
    balance: str | None = None,
) -> Pool:
    """A pool of `amount` (its balance unless given; none for a postpaid commit)."""
    postpaid = kind is CommitmentKind.POSTPAID_COMMIT
    return Pool(
        pool_id,
        "ctr_1",
        kind,
        0,
        D(cost_basis),
        scope,
        starts_at,
        expires_at,
        created_seq,
        D(amount),
        D(0) if postpaid else D(balance if balance is not None else amount),
    )


def usage(product_key: str, quantity: str, amount: str, *cell: str, events: int = 1) -> UsageTotal:
    """A closed period's usage total of one product (one matrix cell)."""
    return UsageTotal(product_key, tuple(cell), D(quantity), D(amount), events)


def inputs_on(
    contract: Contract,
    at: datetime,
    *,
    catalog: Catalog = CATALOG,
    usage_totals: tuple[UsageTotal, ...] = (),
    drawn: Mapping[str, Decimal] | None = None,
    pools: tuple[Pool, ...] = (),
    billed_commitments: frozenset[str] = frozenset(),
    term_usage: Mapping[str, Decimal] | None = None,
    revision: int = 0,
) -> InvoiceInputs:
    """The inputs of the invoice on billing date `at` of `contract`."""
    when: BillingDate = billing_date(contract, at)
    return InvoiceInputs(
        "tnt_1",
        contract,
        when,
        catalog,
        usage_totals,
        drawn,
        pools,
        billed_commitments,
        term_usage,
        revision,
    )


def walk(contract: Contract, limit: int = 40) -> list[BillingDate]:
    """The contract's billing dates in order, from the opening date (at most `limit`)."""
    dates: list[BillingDate] = []
    after: datetime | None = None
    while len(dates) < limit:
        found = next_billing_date(contract, after)
        if found is None:
            break
        dates.append(found)
        after = found.at
    return dates


# ---------------------------------------------------------------- reading composed invoices

PREPAID = CommitmentKind.PREPAID_COMMIT
POSTPAID = CommitmentKind.POSTPAID_COMMIT

# Starts on 15 January (a 31-day month), anchor day 1, ends on 10 March.
STUB = a_contract(term_start=utc(2025, 1, 15), term_end=utc(2025, 3, 10))

Row = tuple[str, str, str, str]


def lines_of(invoice: Invoice, kind: LineKind) -> list[InvoiceLine]:
    """The invoice's lines of one kind, in order."""
    return [line for line in invoice.lines if line.kind is kind]


def summary(lines: list[InvoiceLine]) -> list[tuple[str, str, Decimal, str]]:
    """(key, description, exact amount, rounded amount as printed) of each line."""
    return [(ln.key, ln.description, ln.exact_amount, str(ln.amount)) for ln in lines]


def rows(expected: list[Row]) -> list[tuple[str, str, Decimal, str]]:
    """Expected lines; exact amounts compare by value (20 places or fewer, same number)."""
    return [(key, text, Decimal(exact), rounded) for key, text, exact, rounded in expected]
