"""What the demo does: its pace and money, its customers and the contracts they are opened on."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

ACTOR = "rating dev --demo"
"""Who the demo's operator actions are audited as."""


@dataclass(frozen=True)
class DemoPlan:
    """How the demo runs: period length, the money involved, the pace of traffic."""

    period_seconds: int = 60
    periods: int = 20
    """The contracts' term, in periods: a bounded term stops billing a forgotten demo."""
    starting_credit: Decimal = Decimal("1.00")
    alert_below: Decimal = Decimal("0.40")
    recharge_below: Decimal = Decimal("0.40")
    recharge_amount: Decimal = Decimal("2.00")
    platform_fee: Decimal = Decimal("5.00")
    """Per period, in arrears; the catalog's $500 a month is too much for a minute."""
    traffic_scale: float = 1.0
    """Multiplies every service's requests per second."""
    operator_pause_seconds: float = 5.0
    """How long a failed invoice is on screen before the operator fixes it."""
    refresh_seconds: float = 1.0
    status_every_seconds: float = 5.0
    """Without a terminal: how often a status line is printed."""


@dataclass(frozen=True)
class DemoCustomer:
    """A customer the demo opens, and the part it plays in the story."""

    name: str
    story: str
    payment_method: str
    overage_policy: str
    auto_recharge: bool = False


CUSTOMERS = (
    DemoCustomer("northwind", "prepaid; refused once its credit is gone", "pm_ok", "block"),
    DemoCustomer("globex", "auto-recharge buys credit when low", "pm_ok", "arrears", True),
    # A token the simulated gateway does not know: its first invoice fails at collection.
    DemoCustomer("initech", "card token mistyped (pm_typo)", "pm_typo", "arrears"),
)


def contract_terms(
    customer: DemoCustomer, customer_id: str, plan: DemoPlan, start: datetime
) -> dict[str, object]:
    """The customer's contract in CreateContract's dict form: short periods, alert, fee."""
    period = timedelta(seconds=plan.period_seconds)
    terms: dict[str, object] = {
        "customer_id": customer_id,
        "term_start": start.isoformat(),
        "term_end": (start + period * plan.periods).isoformat(),
        "billing_anchor": {"day": 1},
        "billing_frequency": "monthly",
        "billing_interval_seconds": plan.period_seconds,
        "invoice_currency": "USD",
        "rate_card_key": "list",
        "overage_policy": customer.overage_policy,
        "payment_method": customer.payment_method,
        "overrides": [
            {
                "product_key": "platform-fee",
                "effective_from": start.isoformat(),
                # In arrears, so the first invoice comes when the first period closes.
                "replace_price": {
                    "model": "flat_fee",
                    "amount": str(plan.platform_fee),
                    "timing": "in_arrears",
                },
            }
        ],
        "alert_thresholds": [
            {
                "threshold_id": "low-balance",
                "kind": "balance_below",
                "amount": str(plan.alert_below),
            }
        ],
    }
    if customer.auto_recharge:
        terms["auto_recharge"] = {
            "threshold": str(plan.recharge_below),
            "amount": str(plan.recharge_amount),
        }
    return terms
