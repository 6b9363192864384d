"""Write docs/sample-invoice.{pdf,html}: a month of usage of the example catalog, as invoiced.

The usage is priced by the example catalog exactly as rating prices it (the period total of
each product and cell), then composed, finalized and rendered by the same code the invoice
workflow runs. Run `uv run python tools/sample_invoice.py` after changing invoice documents.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import yaml

from rating_service.core.billing.compose import InvoiceInputs, UsageTotal, compose_invoice
from rating_service.core.billing.document import InvoiceParties, render_html, render_pdf
from rating_service.core.billing.schedule import billing_date
from rating_service.core.contracts.contract import contract_from_dict
from rating_service.core.contracts.pools import pool_from_dict
from rating_service.core.pricing.catalog import catalog_from_document
from rating_service.core.pricing.matrix import Matrix
from rating_service.core.pricing.percentage import Percentage

ROOT = Path(__file__).resolve().parent.parent
CATALOG = ROOT / "rating_service" / "examples" / "catalog.yaml"
DOCS = ROOT / "docs"

CONTRACT = {
    "contract_id": "ctr_northwind_2025",
    "customer_id": "northwind",
    "tenant_id": "tnt_acme_ai",
    "term_start": "2025-01-15T00:00:00+00:00",
    "term_end": "2026-01-15T00:00:00+00:00",
    "billing_anchor": {"day": 1},
    "billing_frequency": "monthly",
    "invoice_currency": "USD",
    "rate_card_key": "list",
    "overage_policy": "arrears",
}

# February's usage: product, matrix cell, quantity, events.
USAGE = [
    ("llm-tokens", ("gpt-4o", "input"), "182000000", 41_210),
    ("llm-tokens", ("gpt-4o", "cached_input"), "64000000", 18_002),
    ("llm-tokens", ("gpt-4o", "output"), "37500000", 41_210),
    ("llm-tokens", ("gpt-4o-mini", "input"), "910000000", 220_415),
    ("llm-tokens", ("gpt-4o-mini", "output"), "120000000", 220_415),
    ("image-generation", ("hd",), "1250", 1_250),
    ("embeddings", (), "1800000000", 9_120),
    ("fine-tuning", (), "140", 6),
    ("support-resolutions", (), "1830", 1_830),
]

POOLS = [
    {
        "pool_id": "commit_2025",
        "kind": "prepaid_commit",
        "cost_basis": "1",
        "starts_at": "2025-01-15T00:00:00+00:00",
        "expires_at": "2026-01-15T00:00:00+00:00",
        "original_amount": "12000",
        "balance": "0",
        "created_seq": 1,
    },
    {
        "pool_id": "launch_credit",
        "kind": "credit",
        "priority": -1,
        "starts_at": "2025-01-15T00:00:00+00:00",
        "expires_at": "2025-04-15T00:00:00+00:00",
        "original_amount": "500",
        "balance": "0",
        "created_seq": 2,
    },
]


def main() -> None:
    """Compose, finalize and render the sample invoice into docs/."""
    catalog = catalog_from_document(yaml.safe_load(CATALOG.read_text()))
    contract = contract_from_dict(CONTRACT)
    at = datetime(2025, 3, 1, tzinfo=UTC)
    card = catalog.rate_cards["list"].in_force_at(datetime(2025, 2, 28, tzinfo=UTC))
    usage = []
    for product, cell, quantity, events in USAGE:
        model = card.price_of(product)
        priced = model.price_of(cell) if isinstance(model, Matrix) else model
        assert not isinstance(priced, Percentage), "the sample prices quantities, not values"
        amount = priced.period_total(Decimal(quantity)).amount
        usage.append(UsageTotal(product, cell, Decimal(quantity), amount, events))
    pools = tuple(pool_from_dict(pool, contract_id=contract.contract_id) for pool in POOLS)
    # The launch credit's last $200 went first, then the commit ran out: the rest is overage.
    drawn = {"launch_credit": Decimal("200"), "commit_2025": Decimal("2849.58")}
    invoice = compose_invoice(
        InvoiceInputs(
            contract.tenant_id,
            contract,
            billing_date(contract, at),
            catalog,
            usage=tuple(usage),
            drawn=drawn,
            pools=pools,
            billed_commitments=frozenset({"commit_2025"}),
        )
    )
    invoice = invoice.finalized("INV-000042", datetime(2025, 3, 1, 1, tzinfo=UTC))
    parties = InvoiceParties(
        "Acme AI, Inc.",
        "Northwind Traders",
        "northwind",
        ("1 Market Street, San Francisco, CA", "billing@acme-ai.example"),
    )
    DOCS.mkdir(exist_ok=True)
    (DOCS / "sample-invoice.html").write_text(render_html(invoice, parties))
    (DOCS / "sample-invoice.pdf").write_bytes(render_pdf(invoice, parties))
    sys.stdout.write(f"wrote docs/sample-invoice.pdf and .html: total {invoice.total} USD\n")


if __name__ == "__main__":
    main()
