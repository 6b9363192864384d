"""The demo's plan: the contracts its customers are opened on."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from rating_service.cli.demo.plan import CUSTOMERS, DemoPlan, contract_terms


def test_contract_terms_have_short_periods_and_only_globex_recharges() -> None:
    start = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    plan = DemoPlan(period_seconds=60, periods=20)
    terms = {c.name: contract_terms(c, f"{c.name}-1", plan, start) for c in CUSTOMERS}
    assert {t["billing_interval_seconds"] for t in terms.values()} == {60}
    assert terms["globex"]["term_end"] == (start + timedelta(minutes=20)).isoformat()
    assert [n for n, t in terms.items() if "auto_recharge" in t] == ["globex"]
    assert terms["initech"]["payment_method"] == "pm_typo"
    assert terms["northwind"]["overage_policy"] == "block"
