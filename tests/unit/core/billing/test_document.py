"""Invoice documents: the HTML page and the PDF show the invoice's numbers, escaped and stable."""

from __future__ import annotations

import io
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from pypdf import PdfReader

from rating_service.core.billing.document import InvoiceParties, render_html, render_pdf
from rating_service.core.billing.invoice import (
    Invoice,
    InvoiceLine,
    InvoiceState,
    LineKind,
    PoolBalance,
    TierLine,
    rounded_line,
)
from rating_service.core.money import CURRENCIES

D = Decimal
USD = CURRENCIES["USD"]
MARCH = (datetime(2025, 3, 1, tzinfo=UTC), datetime(2025, 4, 1, tzinfo=UTC))
PARTIES = InvoiceParties(
    seller_name="Acme AI Ltd",
    buyer_name="Globex Corporation",
    buyer_reference="PO-7731",
    seller_details=("1 Market Street", "VAT GB123456789"),
)


def _usage() -> InvoiceLine:
    # 1,250,000 tokens: 1,000,000 × 0.000002 = 2 + 250,000 × 0.0000015 = 0.375 → 2.375 → 2.38
    tiers = (
        TierLine("Tier 1", D(1_000_000), D("0.000002"), D(2)),
        TierLine("Tier 2", D(250_000), D("0.0000015"), D("0.375")),
    )
    return rounded_line(
        USD,
        LineKind.USAGE,
        "usage:gpt-input:",
        "GPT input tokens · us-east",
        MARCH,
        D("2.375"),
        product_key="gpt-input",
        quantity=D(1_250_000),
        events=42,
        tiers=tiers,
    )


def _invoice() -> Invoice:
    """A finalized invoice: usage with tiers, a credit, a fee, a commit; two balances."""
    lines = (
        _usage(),
        # 3,000,000 × 0.000412345 = 1,237.035 → 1,237.04
        rounded_line(
            USD,
            LineKind.USAGE,
            "usage:gpt-output:",
            "GPT output tokens",
            MARCH,
            D("1237.035"),
            quantity=D(3_000_000),
            unit_price=D("0.000412345"),
        ),
        rounded_line(
            USD,
            LineKind.CREDIT,
            "credit:pool_promo",
            "Promotional credit pool_promo applied",
            MARCH,
            D("-100.004"),
        ),
        rounded_line(
            USD,
            LineKind.FEE,
            "fee:platform:2025-03-01",
            "Platform fee",
            MARCH,
            D(49),
            quantity=D(1),
            unit_price=D(49),
        ),
        rounded_line(
            USD,
            LineKind.COMMIT,
            "commit:pool_commit",
            "Prepaid commit pool_commit",
            (MARCH[0], datetime(2026, 3, 1, tzinfo=UTC)),
            D(10_000),
            quantity=D(10_000),
            unit_price=D(1),
        ),
    )
    draft = Invoice(
        invoice_id="inv_c1_20250401T000000Z",
        tenant_id="t1",
        contract_id="c1",
        customer_id="cust_globex",
        currency=USD,
        billing_date=MARCH[1],
        period_start=MARCH[0],
        period_end=MARCH[1],
        lines=lines,
        balances=(
            PoolBalance("pool_promo", "Promotional credit pool_promo", D("399.996"), None),
            PoolBalance(
                "pool_commit",
                "Prepaid commit pool_commit",
                D(10_000),
                datetime(2026, 3, 1, tzinfo=UTC),
            ),
        ),
    )
    return draft.finalized("INV-000042", datetime(2025, 4, 1, 6, 30, tzinfo=UTC))


def _pdf_text(document: bytes) -> str:
    return "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(document)).pages)


def test_the_invoice_adds_up_as_the_tests_expect() -> None:
    invoice = _invoice()
    # 2.38 + 1,237.04 − 100.00 + 49.00 + 10,000.00
    assert invoice.total == D("11188.42")
    assert [line.amount for line in invoice.lines] == [
        D("2.38"),
        D("1237.04"),
        D("-100.00"),
        D("49.00"),
        D("10000.00"),
    ]


def test_html_shows_number_parties_lines_and_total() -> None:
    page = render_html(_invoice(), PARTIES)
    assert page.startswith("<!DOCTYPE html>")
    assert "<title>Invoice INV-000042</title>" in page
    for text in ("Acme AI Ltd", "VAT GB123456789", "Globex Corporation", "PO-7731"):
        assert text in page
    for description, amount in [
        ("GPT input tokens · us-east", "USD 2.38"),
        ("GPT output tokens", "USD 1,237.04"),
        ("Promotional credit pool_promo applied", "USD -100.00"),
        ("Platform fee", "USD 49.00"),
        ("Prepaid commit pool_commit", "USD 10,000.00"),
    ]:
        assert description in page
        assert amount in page
    assert "USD 11,188.42" in page
    assert "2025-04-01 06:30 UTC" in page  # issue date
    assert "2025-03-01 00:00 UTC – 2025-04-01 00:00 UTC" in page  # service period
    assert "Amounts are exact to the event and rounded once per line, half up." in page


def test_html_shows_tiers_exactly_and_quantities_without_floats() -> None:
    page = render_html(_invoice(), PARTIES)
    assert "1,250,000" in page
    assert "3,000,000" in page
    assert "USD 0.0000015" in page  # tier unit price, every digit
    assert "USD 0.375" in page  # tier amount exact, not rounded like its line
    assert "USD 0.000412345" in page
    assert page.count('class="tier"') == 2


def test_html_subtotals_balances_and_amount_due() -> None:
    page = render_html(_invoice(), PARTIES)
    for label, amount in [
        ("Usage", "USD 1,239.42"),  # 2.38 + 1,237.04
        ("Credits applied", "USD -100.00"),
        ("Fees", "USD 49.00"),
        ("Commits", "USD 10,000.00"),
        ("Amount due", "USD 11,188.42"),
    ]:
        assert f'<th>{label}</th><td class="num">{amount}</td>' in page
    assert "True-up" not in page  # no true-up line, no true-up subtotal
    assert "Balances remaining" in page
    assert "USD 400.00" in page  # 399.996 rounded half up for display
    assert "no expiry" in page
    assert "2026-03-01 00:00 UTC" in page


def test_html_escapes_hostile_text() -> None:
    hostile = InvoiceParties(
        seller_name='Acme "AI" & Co',
        buyer_name="<script>alert('x')</script>",
        buyer_reference="<img src=x onerror=alert(1)>",
    )
    invoice = _invoice()
    line = replace(invoice.lines[0], description="</td><b>bold</b>")
    page = render_html(replace(invoice, lines=(line, *invoice.lines[1:])), hostile)
    assert "<script>" not in page
    assert "<img" not in page
    assert "<b>bold" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert "Acme &quot;AI&quot; &amp; Co" in page
    assert "&lt;/td&gt;&lt;b&gt;bold&lt;/b&gt;" in page


@pytest.mark.parametrize(
    ("state", "mark", "due"),
    [
        (InvoiceState.VOID, "VOID", "USD 0.00"),
        (InvoiceState.PAID, "PAID", "USD 0.00"),
        (InvoiceState.FINALIZED, None, "USD 11,188.42"),
    ],
)
def test_html_marks_void_and_paid_and_nothing_is_due(
    state: InvoiceState, mark: str | None, due: str
) -> None:
    page = render_html(replace(_invoice(), state=state), PARTIES)
    assert ('class="mark' in page) is (mark is not None)
    if mark is not None:
        assert f">{mark}</div>" in page
    assert f'<th>Amount due</th><td class="num">{due}</td>' in page
    assert '<th>Total</th><td class="num">USD 11,188.42</td>' in page


def test_html_of_a_draft_has_no_number_and_no_issue_date() -> None:
    draft = replace(_invoice(), state=InvoiceState.DRAFT, number=None, issued_at=None)
    page = render_html(draft, PARTIES)
    assert "<title>Draft invoice</title>" in page
    assert "not issued" in page
    assert "INV-" not in page


def test_zero_minor_units_show_no_decimals() -> None:
    jpy = CURRENCIES["JPY"]
    line = rounded_line(jpy, LineKind.FEE, "fee:x", "Seat fee", MARCH, D("1234567.5"))
    invoice = replace(_invoice(), currency=jpy, lines=(line,), balances=())
    page = render_html(invoice, PARTIES)
    assert "JPY 1,234,568" in page  # .5 rounds half up, once
    assert "JPY 1,234,568.0" not in page


def test_pdf_holds_number_buyer_and_total() -> None:
    document = render_pdf(_invoice(), PARTIES)
    assert document.startswith(b"%PDF")
    text = _pdf_text(document)
    assert "INV-000042" in text
    assert "Globex Corporation" in text
    assert "USD 11,188.42" in text
    assert "GPT input tokens - us-east" in text  # the middle dot has a latin-1 stand-in


def test_pdf_replaces_text_its_font_cannot_draw() -> None:
    parties = replace(PARTIES, buyer_name="株式会社 Globex → “Ltd”")
    text = _pdf_text(render_pdf(_invoice(), parties))
    assert '???? Globex -> "Ltd"' in text


def test_pdf_reads_as_the_invoice_line_by_line() -> None:
    lines = _pdf_text(render_pdf(_invoice(), PARTIES)).splitlines()
    march = "2025-03-01 00:00 UTC - 2025-04-01 00:00 UTC"
    assert lines == [
        "Invoice INV-000042",
        "From Bill to",
        "Acme AI Ltd",
        "1 Market Street",
        "VAT GB123456789",
        "Globex Corporation",
        "Reference: PO-7731",
        "Customer ID: cust_globex",
        "Invoice number INV-000042",
        "Issue date 2025-04-01 06:30 UTC",
        "Billing date 2025-04-01 00:00 UTC",
        f"Service period {march}",
        "Contract c1",
        "Currency USD",
        "Status Finalized",
        "Description Service period Quantity Unit price Amount",
        # 2.375 rounded once, half up; the tiers keep every digit: 1,000,000 × 0.000002 = 2
        # and 250,000 × 0.0000015 = 0.375.
        f"GPT input tokens - us-east {march} 1,250,000 USD 2.38",
        "    Tier 1 1,000,000 USD 0.000002 USD 2.00",
        "    Tier 2 250,000 USD 0.0000015 USD 0.375",
        # 3,000,000 × 0.000412345 = 1,237.035 → 1,237.04
        f"GPT output tokens {march} 3,000,000 USD 0.000412345 USD 1,237.04",
        f"Promotional credit pool_promo applied {march} USD -100.00",  # −100.004
        f"Platform fee {march} 1 USD 49.00 USD 49.00",
        "Prepaid commit pool_commit 2025-03-01 00:00 UTC - 2026-03-01 00:00 UTC"
        " 10,000 USD 1.00 USD 10,000.00",
        "Usage USD 1,239.42",  # 2.38 + 1,237.04
        "Credits applied USD -100.00",
        "Fees USD 49.00",
        "Commits USD 10,000.00",
        "Total USD 11,188.42",  # 1,239.42 − 100.00 + 49.00 + 10,000.00
        "Amount due USD 11,188.42",
        "Balances remaining",
        "Balance Remaining Expires",
        "Promotional credit pool_promo USD 400.00 no expiry",  # 399.996 shown to the cent
        "Prepaid commit pool_commit USD 10,000.00 2026-03-01 00:00 UTC",
        "Amounts are exact to the event and rounded once per line, half up.",
        "Invoice INV-000042 - page 1",
    ]


@pytest.mark.parametrize(
    ("invoice", "created"),
    [
        (_invoice(), "D:20250401063000Z"),  # issued 2025-04-01 06:30 UTC
        # A draft has no issue date: its billing date stands in.
        (
            replace(_invoice(), state=InvoiceState.DRAFT, number=None, issued_at=None),
            "D:20250401000000Z",
        ),
    ],
    ids=["issued", "draft"],
)
def test_pdf_is_dated_by_the_invoice_not_the_clock(invoice: Invoice, created: str) -> None:
    # A creation date read from the clock would change the bytes (and the /ID hash) on every
    # render in a new second; pinned to the invoice, a re-render is byte for byte the same.
    document = render_pdf(invoice, PARTIES)
    metadata = PdfReader(io.BytesIO(document)).metadata
    assert metadata is not None
    assert str(metadata["/CreationDate"]) == created
    assert render_pdf(invoice, PARTIES) == document


def test_pdf_marks_a_void_invoice() -> None:
    text = _pdf_text(render_pdf(replace(_invoice(), state=InvoiceState.VOID), PARTIES))
    assert "VOID" in text


@pytest.mark.parametrize(
    ("state", "status", "paid", "due"),
    [
        (InvoiceState.FINALIZED, "Finalized", None, "USD 11,188.42"),
        (InvoiceState.UNCOLLECTIBLE, "Uncollectible", None, "USD 11,188.42"),
        (InvoiceState.PAID, "Paid", "USD 11,188.42", "USD 0.00"),
        (InvoiceState.VOID, "Void", None, "USD 0.00"),
    ],
)
def test_both_documents_show_the_state_what_was_paid_and_what_is_due(
    state: InvoiceState, status: str, paid: str | None, due: str
) -> None:
    # As a Stripe invoice: a paid one shows the amount paid and nothing due, a void one no debt.
    invoice = replace(_invoice(), state=state)
    page = render_html(invoice, PARTIES)
    text = _pdf_text(render_pdf(invoice, PARTIES))
    assert f"<tr><th>Status</th><td>{status}</td></tr>" in page
    assert f"Status {status}" in text
    if paid is None:
        assert "Amount paid" not in page and "Amount paid" not in text
    else:
        assert f'<th>Amount paid</th><td class="num">{paid}</td>' in page
        assert f"Amount paid {paid}" in text
    assert f'<th>Amount due</th><td class="num">{due}</td>' in page
    assert f"Amount due {due}" in text


def test_a_long_invoice_flows_onto_more_pages() -> None:
    base = _invoice()
    lines = tuple(
        rounded_line(USD, LineKind.FEE, f"fee:{n}", f"Seat {n}", MARCH, D(n)) for n in range(200)
    )
    long = replace(base, lines=lines)
    reader = PdfReader(io.BytesIO(render_pdf(long, PARTIES)))
    assert len(reader.pages) > 1
    text = "\n".join(page.extract_text() for page in reader.pages)
    assert "Seat 199" in text
    # 0 + 1 + … + 199 = 19,900
    assert "USD 19,900.00" in text
