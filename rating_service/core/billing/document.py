"""Invoice and credit note documents a customer receives: a self-contained HTML page and an A4 PDF.

Both show the same content from the same `Invoice`: its parties, dates, status, lines with
their tier breakdown, subtotals by kind, the total, the amount paid and the amount due, and the
balances left. They show the invoice in its state: paid is marked PAID with the amount paid and
nothing due, void is marked VOID with nothing due (as Stripe's invoice PDFs do). Money is shown
as `USD 1,234.50`: the rounded line amounts the invoice holds, never re-rounded; tier amounts
are exact and informational. Rendering is pure and deterministic: the same invoice gives the
same bytes. A credit note's documents show the invoice it credits, its reason, its lines
(what each credits, by quantity at a unit price or as an amount), the total credited and where
it went: off the amount due, or refunded.
"""

from __future__ import annotations

import html
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from fpdf import FPDF, FontFace
from fpdf.enums import TableBordersLayout, XPos, YPos

from rating_service.core.billing.credit_note import CreditNote
from rating_service.core.billing.invoice import Invoice, InvoiceLine, InvoiceState, LineKind
from rating_service.core.money import ROUNDING_CONTEXT, Currency, round_to_minor_unit

ZERO = Decimal(0)

FOOTER_NOTE = "Amounts are exact to the event and rounded once per line, half up."

_SUBTOTALS: tuple[tuple[str, LineKind], ...] = (
    ("Usage", LineKind.USAGE),
    ("Maximum spend discounts", LineKind.DISCOUNT),
    ("Minimum spend top-ups", LineKind.MINIMUM_SPEND),
    ("Credits applied", LineKind.CREDIT),
    ("Fees", LineKind.FEE),
    ("Commits", LineKind.COMMIT),
    ("True-up", LineKind.TRUE_UP),
)

_GRAND = ' class="grand"'

_MARKS = {
    InvoiceState.DRAFT: "DRAFT",
    InvoiceState.PAID: "PAID",
    InvoiceState.VOID: "VOID",
}

# Nothing is owed on an invoice paid or voided, whatever its total.
_SETTLED = frozenset({InvoiceState.PAID, InvoiceState.VOID})


@dataclass(frozen=True, slots=True)
class InvoiceParties:
    """Who sends the invoice and who receives it, as printed on the document."""

    seller_name: str
    buyer_name: str
    buyer_reference: str = ""
    seller_details: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class _Row:
    """One row of the lines table, as text; `tier` rows explain the usage line above them."""

    description: str
    period: str
    quantity: str
    unit_price: str
    amount: str
    tier: bool = False


def render_html(invoice: Invoice, parties: InvoiceParties) -> str:
    """The invoice as one self-contained HTML5 document (inline CSS, no external assets)."""
    e = html.escape
    title = _title(invoice)
    mark = _MARKS.get(invoice.state)
    mark_html = f'<div class="mark mark-{e(invoice.state)}">{e(mark)}</div>' if mark else ""
    seller = "".join(f"<div>{e(line)}</div>" for line in _seller_lines(parties))
    buyer = "".join(f"<div>{e(line)}</div>" for line in _buyer_lines(invoice, parties))
    details = "".join(
        f"<tr><th>{e(label)}</th><td>{e(value)}</td></tr>" for label, value in _details(invoice)
    )
    rows = "".join(
        f'<tr class="{"tier" if row.tier else "line"}">'
        f'<td class="desc">{e(row.description)}</td><td>{e(row.period)}</td>'
        f'<td class="num">{e(row.quantity)}</td><td class="num">{e(row.unit_price)}</td>'
        f'<td class="num">{e(row.amount)}</td></tr>'
        for row in _line_rows(invoice)
    )
    totals = "".join(
        f'<tr{_GRAND if strong else ""}><th>{e(label)}</th><td class="num">{e(value)}</td></tr>'
        for label, value, strong in _totals(invoice)
    )
    balances = _balance_rows(invoice)
    balances_html = (
        "<h2>Balances remaining</h2>"
        '<table class="grid"><thead><tr><th>Balance</th><th class="num">Remaining</th>'
        "<th>Expires</th></tr></thead><tbody>"
        + "".join(
            f'<tr><td>{e(d)}</td><td class="num">{e(b)}</td><td>{e(x)}</td></tr>'
            for d, b, x in balances
        )
        + "</tbody></table>"
        if balances
        else ""
    )
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{e(title)}</title>
<style>{_CSS}</style>
</head>
<body>
<main>
<header><h1>{e(title)}</h1>{mark_html}</header>
<section class="parties">
<div class="party"><h2>From</h2>{seller}</div>
<div class="party"><h2>Bill to</h2>{buyer}</div>
</section>
<table class="details"><tbody>{details}</tbody></table>
<table class="grid lines">
<thead><tr><th>Description</th><th>Service period</th><th class="num">Quantity</th>
<th class="num">Unit price</th><th class="num">Amount</th></tr></thead>
<tbody>{rows}</tbody>
</table>
<table class="totals"><tbody>{totals}</tbody></table>
{balances_html}
<footer>{e(FOOTER_NOTE)}</footer>
</main>
</body>
</html>
"""


def render_pdf(invoice: Invoice, parties: InvoiceParties) -> bytes:
    """The invoice as an A4 PDF; the same invoice always renders to the same bytes."""
    pdf = _InvoicePdf(_latin1(_title(invoice)))
    # The creation date is written into the file and its /ID hash: pin it to the invoice.
    pdf.set_creation_date(_utc(invoice.issued_at or invoice.billing_date))
    pdf.set_title(pdf.label)
    pdf.set_author(_latin1(parties.seller_name))
    pdf.set_margins(15, 15, 15)
    pdf.set_auto_page_break(True, margin=18)
    pdf.add_page()
    _pdf_header(pdf, invoice)
    _pdf_parties(pdf, invoice, parties)
    _pdf_details(pdf, invoice)
    _pdf_lines(pdf, invoice)
    _pdf_totals(pdf, invoice)
    _pdf_balances(pdf, invoice)
    pdf.ln(6)
    pdf.set_font("Helvetica", "I", 8)
    pdf.multi_cell(0, 4, _latin1(FOOTER_NOTE), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    return bytes(pdf.output())


def render_credit_note_html(note: CreditNote, parties: InvoiceParties) -> str:
    """The credit note as one self-contained HTML5 document, styled as the invoices are."""
    e = html.escape
    title = f"Credit note {note.number}"
    seller = "".join(f"<div>{e(line)}</div>" for line in _seller_lines(parties))
    buyer = "".join(f"<div>{e(line)}</div>" for line in _credit_note_buyer_lines(note, parties))
    details = "".join(
        f"<tr><th>{e(label)}</th><td>{e(value)}</td></tr>"
        for label, value in _credit_note_details(note)
    )
    rows = "".join(
        f'<tr class="line"><td class="desc">{e(d)}</td><td class="num">{e(q)}</td>'
        f'<td class="num">{e(p)}</td><td class="num">{e(a)}</td></tr>'
        for d, q, p, a in _credit_note_rows(note)
    )
    total = _money(note.total, note.currency)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{e(title)}</title>
<style>{_CSS}</style>
</head>
<body>
<main>
<header><h1>{e(title)}</h1></header>
<section class="parties">
<div class="party"><h2>From</h2>{seller}</div>
<div class="party"><h2>Credit to</h2>{buyer}</div>
</section>
<table class="details"><tbody>{details}</tbody></table>
<table class="grid lines">
<thead><tr><th>Invoice line credited</th><th class="num">Quantity</th>
<th class="num">Unit price</th><th class="num">Amount</th></tr></thead>
<tbody>{rows}</tbody>
</table>
<table class="totals"><tbody><tr class="grand"><th>Total credited</th>
<td class="num">{e(total)}</td></tr></tbody></table>
<footer>{e(_credit_note_outcome(note))}</footer>
</main>
</body>
</html>
"""


def render_credit_note_pdf(note: CreditNote, parties: InvoiceParties) -> bytes:
    """The credit note as an A4 PDF; the same credit note always renders to the same bytes."""
    pdf = _InvoicePdf(_latin1(f"Credit note {note.number}"))
    pdf.set_creation_date(_utc(note.issued_at))
    pdf.set_title(pdf.label)
    pdf.set_author(_latin1(parties.seller_name))
    pdf.set_margins(15, 15, 15)
    pdf.set_auto_page_break(True, margin=18)
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 18)
    pdf.cell(0, 10, pdf.label, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.ln(4)
    pdf.set_font("Helvetica", "", 10)
    with pdf.table(
        borders_layout=TableBordersLayout.NONE, headings_style=_STRONG, line_height=5
    ) as table:
        table.row(["From", "Credit to"])
        table.row(
            [
                _latin1("\n".join(_seller_lines(parties))),
                _latin1("\n".join(_credit_note_buyer_lines(note, parties))),
            ]
        )
    pdf.ln(4)
    pdf.set_font("Helvetica", "", 9)
    with pdf.table(
        borders_layout=TableBordersLayout.NONE,
        first_row_as_headings=False,
        col_widths=(1, 3),
        line_height=5,
        text_align="LEFT",
    ) as table:
        for label, value in _credit_note_details(note):
            row = table.row()
            row.cell(_latin1(label), style=_STRONG)
            row.cell(_latin1(value))
    pdf.ln(4)
    pdf.set_font("Helvetica", "", 8)
    with pdf.table(
        borders_layout=TableBordersLayout.HORIZONTAL_LINES,
        headings_style=_HEADING,
        col_widths=(94, 26, 30, 30),
        line_height=4,
        padding=1,
        text_align=("LEFT", "RIGHT", "RIGHT", "RIGHT"),
        repeat_headings=1,
    ) as table:
        table.row(["Invoice line credited", "Quantity", "Unit price", "Amount"])
        for cells in _credit_note_rows(note):
            table.row([_latin1(cell) for cell in cells])
    pdf.ln(4)
    pdf.set_font("Helvetica", "B", 10)
    pdf.cell(0, 6, _latin1(f"Total credited: {_money(note.total, note.currency)}"), align="R")
    pdf.ln(10)
    pdf.set_font("Helvetica", "I", 8)
    pdf.multi_cell(0, 4, _latin1(_credit_note_outcome(note)), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    return bytes(pdf.output())


def _credit_note_buyer_lines(note: CreditNote, parties: InvoiceParties) -> list[str]:
    lines = [parties.buyer_name]
    if parties.buyer_reference:
        lines.append(f"Reference: {parties.buyer_reference}")
    lines.append(f"Customer ID: {note.customer_id}")
    return lines


_REASONS = {
    "duplicate": "Duplicate charge",
    "fraudulent": "Fraudulent charge",
    "order_change": "Order change",
    "product_unsatisfactory": "Product unsatisfactory",
    "other": "Other",
}


def _credit_note_details(note: CreditNote) -> list[tuple[str, str]]:
    details = [
        ("Credit note number", note.number),
        ("Issue date", _moment(note.issued_at)),
        ("Invoice credited", f"{note.invoice_number} ({note.invoice_id})"),
        ("Contract", note.contract_id),
        ("Currency", note.currency.code),
        ("Reason", _REASONS.get(str(note.reason), str(note.reason))),
    ]
    if note.memo:
        details.append(("Note", note.memo))
    return details


def _credit_note_rows(note: CreditNote) -> list[tuple[str, str, str, str]]:
    return [
        (
            line.description,
            _quantity(line.quantity),
            _unit_price(line.unit_price, note.currency),
            _money(line.amount, note.currency),
        )
        for line in note.lines
    ]


def _credit_note_outcome(note: CreditNote) -> str:
    total = _money(note.total, note.currency)
    if note.refund_to is None:
        return f"{total} is taken off the amount due on invoice {note.invoice_number}."
    if str(note.refund_to) == "gateway":
        return f"{total} is refunded to the payment method the invoice was paid with."
    return f"{total} is added to your account as credit, to spend on usage."


# Content shared by both documents.


def _title(invoice: Invoice) -> str:
    return f"Invoice {invoice.number}" if invoice.number is not None else "Draft invoice"


def _seller_lines(parties: InvoiceParties) -> list[str]:
    return [parties.seller_name, *parties.seller_details]


def _buyer_lines(invoice: Invoice, parties: InvoiceParties) -> list[str]:
    lines = [parties.buyer_name]
    if parties.buyer_reference:
        lines.append(f"Reference: {parties.buyer_reference}")
    lines.append(f"Customer ID: {invoice.customer_id}")
    return lines


def _details(invoice: Invoice) -> list[tuple[str, str]]:
    details = [
        ("Invoice number", invoice.number or "not assigned"),
        ("Issue date", _moment(invoice.issued_at) if invoice.issued_at else "not issued"),
        ("Billing date", _moment(invoice.billing_date)),
        ("Service period", _period(invoice.period_start, invoice.period_end)),
        ("Contract", invoice.contract_id),
        ("Currency", invoice.currency.code),
        ("Status", str(invoice.state).capitalize()),
    ]
    if invoice.revision:
        # A revision replaces a voided invoice of the same billing date.
        details.append(("Revision", f"{invoice.revision} (replaces a voided invoice)"))
    return details


def _line_rows(invoice: Invoice) -> Iterator[_Row]:
    currency = invoice.currency
    for line in invoice.lines:
        yield _Row(
            line.description,
            _period(line.service_start, line.service_end),
            _quantity(line.quantity),
            _unit_price(line.unit_price, currency),
            _money(line.amount, currency),
        )
        yield from _tier_rows(line, currency)


def _tier_rows(line: InvoiceLine, currency: Currency) -> Iterator[_Row]:
    for tier in line.tiers:
        yield _Row(
            tier.description,
            "",
            _quantity(tier.quantity),
            _unit_price(tier.unit_price, currency),
            _exact_money(tier.amount, currency),
            tier=True,
        )


def _totals(invoice: Invoice) -> list[tuple[str, str, bool]]:
    """(label, amount, emphasised) rows: a subtotal per kind present, the total, what was paid
    (once paid), what is due."""
    currency = invoice.currency
    present = {line.kind for line in invoice.lines}
    rows = [
        (label, _money(invoice.subtotal(kind), currency), False)
        for label, kind in _SUBTOTALS
        if kind in present
    ]
    due = ZERO if invoice.state in _SETTLED else invoice.amount_due
    rows.append(("Total", _money(invoice.total, currency), True))
    if invoice.credited:
        rows.append(("Amount credited", _money(-invoice.credited, currency), False))
    if invoice.state is InvoiceState.PAID:
        # Credited before it was paid, the customer paid only what was left.
        paid = invoice.total if invoice.paid is None else invoice.paid
        rows.append(("Amount paid", _money(paid, currency), True))
    rows.append(("Amount due", _money(due, currency), True))
    return rows


def _balance_rows(invoice: Invoice) -> list[tuple[str, str, str]]:
    return [
        (
            balance.description,
            _money(balance.balance, invoice.currency),
            _moment(balance.expires_at) if balance.expires_at else "no expiry",
        )
        for balance in invoice.balances
    ]


# Formatting: exact decimals, never floats.


def _money(amount: Decimal, currency: Currency) -> str:
    """`USD 1,234.50`: rounded half up to the minor unit (a no-op for an invoice line)."""
    rounded = round_to_minor_unit(amount, currency)
    return _with_code(rounded, currency, currency.minor_units)


def _exact_money(amount: Decimal, currency: Currency) -> str:
    """An exact amount with at least the minor unit's places and every significant digit."""
    return _with_code(amount, currency, max(currency.minor_units, _places(amount)))


def _unit_price(price: Decimal | None, currency: Currency) -> str:
    return "" if price is None else _exact_money(price, currency)


def _quantity(quantity: Decimal | None) -> str:
    """`1,250,000` or `0.0000025`: exact, without trailing zeros."""
    return "" if quantity is None else format(quantity, f",.{_places(quantity)}f")


def _with_code(amount: Decimal, currency: Currency, places: int) -> str:
    if amount.is_zero():
        amount = amount.copy_abs()  # never print "-0.00"
    # Decimal formats exactly; `places` is never fewer than the value's digits, so no rounding.
    return f"{currency.code} {format(amount, f',.{places}f')}"


def _places(value: Decimal) -> int:
    """Decimal places the value needs, trailing zeros ignored."""
    exponent = value.normalize(context=ROUNDING_CONTEXT).as_tuple().exponent
    return max(0, -exponent) if isinstance(exponent, int) else 0


def _utc(moment: datetime) -> datetime:
    # Domain times are UTC-aware; a naive one is read as UTC rather than as local time.
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _moment(moment: datetime) -> str:
    """`2025-03-01 00:00 UTC`, with seconds only when the moment has them."""
    utc = _utc(moment)
    shape = "%Y-%m-%d %H:%M:%S" if utc.second or utc.microsecond else "%Y-%m-%d %H:%M"
    return f"{utc.strftime(shape)} UTC"


def _period(start: datetime, end: datetime) -> str:
    return f"{_moment(start)} – {_moment(end)}"


# PDF layout. Core fonts only, so no font file is embedded and the output stays small.


class _InvoicePdf(FPDF):
    """A4 pages whose footer names the invoice and the page."""

    def __init__(self, label: str) -> None:
        super().__init__(orientation="portrait", unit="mm", format="A4")
        self.label = label
        # The total-pages alias would also be replaced inside customer text that contains it.
        self.alias_nb_pages(None)  # type: ignore[arg-type]

    def footer(self) -> None:
        """Invoice title and page number at the bottom of every page."""
        self.set_y(-12)
        self.set_font("Helvetica", "", 8)
        self.set_text_color(110)
        self.cell(0, 5, f"{self.label} - page {self.page_no()}", align="C")
        self.set_text_color(0)


_HEADING = FontFace(emphasis="BOLD", fill_color=235)
_TIER = FontFace(emphasis="ITALICS", color=100, size_pt=8)
_STRONG = FontFace(emphasis="BOLD")


def _pdf_header(pdf: FPDF, invoice: Invoice) -> None:
    top = pdf.get_y()
    pdf.set_font("Helvetica", "B", 18)
    pdf.cell(0, 10, _latin1(_title(invoice)))
    mark = _MARKS.get(invoice.state)
    if mark:
        pdf.set_xy(pdf.l_margin, top)
        pdf.set_font("Helvetica", "B", 22)
        pdf.set_text_color(*((200, 0, 0) if invoice.state is InvoiceState.VOID else (0, 130, 60)))
        pdf.cell(0, 10, mark, align="R")
        pdf.set_text_color(0)
    pdf.set_xy(pdf.l_margin, top + 14)


def _pdf_parties(pdf: FPDF, invoice: Invoice, parties: InvoiceParties) -> None:
    pdf.set_font("Helvetica", "", 10)
    with pdf.table(
        borders_layout=TableBordersLayout.NONE,
        headings_style=_STRONG,
        line_height=5,
        text_align="LEFT",
    ) as table:
        table.row(["From", "Bill to"])
        table.row(
            [
                _latin1("\n".join(_seller_lines(parties))),
                _latin1("\n".join(_buyer_lines(invoice, parties))),
            ]
        )
    pdf.ln(4)


def _pdf_details(pdf: FPDF, invoice: Invoice) -> None:
    pdf.set_font("Helvetica", "", 9)
    with pdf.table(
        borders_layout=TableBordersLayout.NONE,
        first_row_as_headings=False,
        col_widths=(1, 3),
        line_height=5,
        text_align="LEFT",
    ) as table:
        for label, value in _details(invoice):
            row = table.row()
            row.cell(_latin1(label), style=_STRONG)
            row.cell(_latin1(value))
    pdf.ln(4)


def _pdf_lines(pdf: FPDF, invoice: Invoice) -> None:
    pdf.set_font("Helvetica", "", 8)
    with pdf.table(
        borders_layout=TableBordersLayout.HORIZONTAL_LINES,
        headings_style=_HEADING,
        col_widths=(58, 44, 26, 26, 26),
        line_height=4,
        padding=1,
        text_align=("LEFT", "LEFT", "RIGHT", "RIGHT", "RIGHT"),
        # A long invoice flows onto further pages, each starting with the column headings.
        repeat_headings=1,
    ) as table:
        table.row(["Description", "Service period", "Quantity", "Unit price", "Amount"])
        for line in _line_rows(invoice):
            description = f"    {line.description}" if line.tier else line.description
            cells = (description, line.period, line.quantity, line.unit_price, line.amount)
            table.row([_latin1(cell) for cell in cells], style=_TIER if line.tier else None)
    pdf.ln(4)


def _pdf_totals(pdf: FPDF, invoice: Invoice) -> None:
    pdf.set_font("Helvetica", "", 10)
    with pdf.table(
        borders_layout=TableBordersLayout.NONE,
        first_row_as_headings=False,
        width=90,
        align="RIGHT",
        col_widths=(1, 1),
        line_height=6,
        text_align=("LEFT", "RIGHT"),
    ) as table:
        for label, value, strong in _totals(invoice):
            table.row([_latin1(label), _latin1(value)], style=_STRONG if strong else None)
    pdf.ln(4)


def _pdf_balances(pdf: FPDF, invoice: Invoice) -> None:
    balances = _balance_rows(invoice)
    if not balances:
        return
    pdf.set_font("Helvetica", "B", 11)
    pdf.cell(0, 7, "Balances remaining", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_font("Helvetica", "", 9)
    with pdf.table(
        borders_layout=TableBordersLayout.HORIZONTAL_LINES,
        headings_style=_HEADING,
        col_widths=(3, 2, 2),
        line_height=5,
        padding=1,
        text_align=("LEFT", "RIGHT", "LEFT"),
    ) as table:
        table.row(["Balance", "Remaining", "Expires"])
        for cells in balances:
            table.row([_latin1(cell) for cell in cells])


# The PDF core fonts (Helvetica) only encode latin-1: common punctuation gets an ASCII stand-in.
_LATIN1_STAND_INS = str.maketrans(
    {
        "·": "-",
        "–": "-",
        "—": "-",
        "−": "-",
        "‐": "-",
        "→": "->",
        "←": "<-",
        "‘": "'",
        "’": "'",
        "‚": ",",
        "“": '"',
        "”": '"',
        "„": '"',
        "…": "...",
        "•": "*",
        "≈": "~",
        "≤": "<=",
        "≥": ">=",
        "€": "EUR",
        "™": "TM",
        "\u00a0": " ",
        "\u202f": " ",
        "\t": " ",
    }
)


def _latin1(text: str) -> str:
    """Text the core fonts can draw: stand-ins for common punctuation, `?` for the rest."""
    encodable = text.translate(_LATIN1_STAND_INS).encode("latin-1", "replace").decode("latin-1")
    # Control characters (other than line breaks) have no glyph and could upset the layout.
    return "".join(
        char if char == "\n" or (" " <= char <= "~") or char >= "\u00a0" else "?"
        for char in encodable
    )


_CSS = """
:root { color: #1a1a1a; font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; }
body { margin: 0; background: #f4f4f4; }
main { max-width: 960px; margin: 24px auto; padding: 40px; background: #fff; }
header { display: flex; justify-content: space-between; align-items: center; }
h1 { font-size: 28px; margin: 0; }
h2 { font-size: 15px; margin: 24px 0 8px; }
.mark { font-size: 32px; font-weight: 700; letter-spacing: 4px; padding: 4px 16px;
  border: 4px solid currentColor; border-radius: 6px; transform: rotate(-6deg); }
.mark-void { color: #c00000; }
.mark-paid { color: #00823c; }
.mark-draft { color: #777; }
.parties { display: flex; gap: 48px; margin: 24px 0; }
.party { flex: 1; }
.party h2 { margin-top: 0; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
.details { width: auto; margin-bottom: 24px; }
.details th { text-align: left; padding: 2px 24px 2px 0; font-weight: 600; }
.grid th, .grid td { padding: 6px 8px; border-bottom: 1px solid #ddd; vertical-align: top; }
.grid thead th { background: #efefef; text-align: left; }
.num { text-align: right !important; white-space: nowrap; font-variant-numeric: tabular-nums; }
tr.tier td { color: #666; font-size: 12px; font-style: italic; border-bottom: none; }
tr.tier td.desc { padding-left: 28px; }
.totals { width: 360px; margin: 16px 0 0 auto; }
.totals th { text-align: left; font-weight: 400; padding: 4px 8px; }
.totals td { padding: 4px 8px; }
.totals tr.grand th, .totals tr.grand td { font-weight: 700; border-top: 1px solid #999; }
footer { margin-top: 32px; font-size: 12px; color: #666; }
@media print { body { background: #fff; } main { margin: 0; padding: 0; } }
"""
