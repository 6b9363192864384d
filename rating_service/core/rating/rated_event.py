"""What rating one event produced: the answer a caller gets, stored so a replay gets it again."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from rating_service.core.money import format_decimal
from rating_service.core.pricing.breakdown import LineItem, PriceLine


@dataclass(frozen=True, slots=True)
class ChargeLine:
    """The charge for one product the event measured, with its price breakdown."""

    product_key: str
    quantity: Decimal
    dimensions: dict[str, str]
    amount: Decimal
    """In the rate card's pricing unit, exact."""
    amount_in_invoice_currency: Decimal
    breakdown: tuple[PriceLine, ...]
    cell_dimensions: tuple[str, ...] = ()
    """The matrix dimension names the breakdown's `cell` values belong to."""
    meter: MeterChange | None = None
    """How the event moved the period's aggregated quantity (every meter but a plain sum/count)."""


@dataclass(frozen=True, slots=True)
class MeterChange:
    """The period's aggregated quantity before and after an event, and why it moved so."""

    aggregation: str
    window: str
    """The window the event counted in (`2026-12-03`), or "" for the whole period."""
    before: Decimal
    after: Decimal
    note: str


@dataclass(frozen=True, slots=True)
class FiredAlert:
    """An alert the event made cross."""

    kind: str
    subject: str
    threshold: Decimal
    value: Decimal


@dataclass(frozen=True, slots=True)
class RatedEvent:
    """One event's outcome: the charge, how pools covered it, balances after, alerts fired."""

    event_id: str
    contract_id: str
    invoice_currency: str
    charge: Decimal
    lines: tuple[ChargeLine, ...]
    draws: tuple[tuple[str, Decimal], ...]
    overage: Decimal
    balances: tuple[tuple[str, Decimal, Decimal], ...]
    """(pool id, remaining, pending) for each pool the event touched."""
    alerts: tuple[FiredAlert, ...]
    period_start: datetime
    period_end: datetime

    def to_json(self) -> dict[str, Any]:
        """The stored form (decimals as strings, so nothing is lost)."""
        return {
            "event_id": self.event_id,
            "contract_id": self.contract_id,
            "invoice_currency": self.invoice_currency,
            "charge": format_decimal(self.charge),
            "lines": [
                {
                    "product_key": line.product_key,
                    "quantity": format_decimal(line.quantity),
                    "dimensions": line.dimensions,
                    "amount": format_decimal(line.amount),
                    "amount_in_invoice_currency": format_decimal(line.amount_in_invoice_currency),
                    "breakdown": [_price_line_json(p) for p in line.breakdown],
                    "cell_dimensions": list(line.cell_dimensions),
                    **_meter_json(line.meter),
                }
                for line in self.lines
            ],
            "draws": [[pool, format_decimal(amount)] for pool, amount in self.draws],
            "overage": format_decimal(self.overage),
            "balances": [
                [pool, format_decimal(remaining), format_decimal(pending)]
                for pool, remaining, pending in self.balances
            ],
            "alerts": [
                [a.kind, a.subject, format_decimal(a.threshold), format_decimal(a.value)]
                for a in self.alerts
            ],
            "period_start": self.period_start.isoformat(),
            "period_end": self.period_end.isoformat(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RatedEvent:
        """Rebuild a stored outcome exactly."""
        return cls(
            data["event_id"],
            data["contract_id"],
            data["invoice_currency"],
            Decimal(data["charge"]),
            tuple(
                ChargeLine(
                    line["product_key"],
                    Decimal(line["quantity"]),
                    dict(line["dimensions"]),
                    Decimal(line["amount"]),
                    Decimal(line["amount_in_invoice_currency"]),
                    tuple(_price_line(p) for p in line["breakdown"]),
                    tuple(line["cell_dimensions"]),
                    _meter_change(line.get("meter")),
                )
                for line in data["lines"]
            ),
            tuple((pool, Decimal(amount)) for pool, amount in data["draws"]),
            Decimal(data["overage"]),
            tuple((p, Decimal(r), Decimal(q)) for p, r, q in data["balances"]),
            tuple(
                FiredAlert(kind, subject, Decimal(threshold), Decimal(value))
                for kind, subject, threshold, value in data["alerts"]
            ),
            datetime.fromisoformat(data["period_start"]),
            datetime.fromisoformat(data["period_end"]),
        )


def _meter_json(change: MeterChange | None) -> dict[str, Any]:
    if change is None:
        return {}
    return {
        "meter": [
            change.aggregation,
            change.window,
            format_decimal(change.before),
            format_decimal(change.after),
            change.note,
        ]
    }


def _meter_change(data: list[Any] | None) -> MeterChange | None:
    if data is None:
        return None
    aggregation, window, before, after, note = data
    return MeterChange(aggregation, window, Decimal(before), Decimal(after), note)


def _price_line_json(line: PriceLine) -> list[Any]:
    return [
        line.item.value,
        format_decimal(line.quantity),
        format_decimal(line.unit_price),
        format_decimal(line.flat_fee),
        format_decimal(line.amount),
        line.tier,
        list(line.cell),
    ]


def _price_line(data: list[Any]) -> PriceLine:
    item, quantity, unit_price, flat_fee, amount, tier, cell = data
    return PriceLine(
        LineItem(item),
        Decimal(quantity),
        Decimal(unit_price),
        Decimal(flat_fee),
        Decimal(amount),
        tier,
        tuple(cell),
    )
