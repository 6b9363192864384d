"""`rating dev --demo` on a real server, worker, Temporal and PostgreSQL, with 3-second periods;
and its view, rendered from hand-made states without a terminal."""

from __future__ import annotations

import asyncio
import io
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from rating_service.cli.catalog_file import read_catalog_file
from rating_service.cli.demo import (
    CUSTOMERS,
    RATE_WINDOW_SECONDS,
    Demo,
    DemoAccount,
    DemoPlan,
    DemoState,
    InvoiceSeen,
    PoolLine,
    ServiceStats,
    balance_bar,
    contract_terms,
    describe_notification,
    elapsed,
    money,
    render_screen,
    status_line,
)
from rating_service.cli.dev import EXAMPLE_CATALOG
from rating_service.core.auth import Role
from rating_service.runtime.server import RunningServer
from rating_service.settings import Settings
from tests.conftest import TenantKeys, eventually
from tests.integration.cycles import billing_stack

D = Decimal

FAST_PLAN = DemoPlan(
    period_seconds=3,
    periods=30,
    starting_credit=D("0.10"),
    alert_below=D("0.05"),
    recharge_below=D("0.05"),
    recharge_amount=D("0.20"),
    traffic_scale=2.0,
    operator_pause_seconds=0.0,
    refresh_seconds=0.2,
    status_every_seconds=1.0,
)
"""The demo's story in seconds: credit of ten cents against some $0.05 a second per customer."""


def _story_told(demo: Demo) -> bool:
    """A refusal, an alert, a recharge, an invoice issued and paid, the failing one replayed."""
    state = demo.state
    globex = next((a for a in state.accounts if a.customer.name == "globex"), None)
    # Everything the test asserts, so a slow machine waits for it rather than fails.
    return (
        any("INSUFFICIENT_CREDIT" in s.last_refusal for s in state.services.values())
        and globex is not None
        and globex.recharges >= 1
        and any(i.state == "paid" for i in globex.invoices.values())
        and {"alert", "invoice"} <= {entry.kind for entry in state.feed}
        and any(f.paid for f in state.failed_invoices)
    )


async def test_the_demo_rates_traffic_bills_and_replays_the_failing_invoice(
    settings: Settings, temporal_address: str, server: RunningServer, acme: TenantKeys
) -> None:
    catalog = read_catalog_file(EXAMPLE_CATALOG)
    async with billing_stack(settings, temporal_address, server, acme, catalog=catalog) as stack:
        out = io.StringIO()
        demo = Demo(
            stack.worker_config,
            f"127.0.0.1:{server.port}",
            acme.tokens[Role.ADMIN],
            FAST_PLAN,
            out=out,
            interactive=False,
        )
        stop = asyncio.Event()
        running = asyncio.create_task(demo.run(stop))
        try:
            await eventually(lambda: running.done() or _story_told(demo), timeout_seconds=30)
        finally:
            stop.set()
            await running  # a loop that failed fails the test here
        print(out.getvalue())  # pytest shows it when the test fails
        state = demo.state
        # Traffic was rated through the API; northwind's empty pools refused some of it.
        assert sum(s.rated for s in state.services.values()) > 20
        assert sum(s.refused for s in state.services.values()) > 0
        assert any("INSUFFICIENT_CREDIT" in s.last_refusal for s in state.services.values())
        # Periods closed into invoices, announced by signed webhooks and seen paid.
        assert state.webhooks > 0
        globex = next(a for a in state.accounts if a.customer.name == "globex")
        assert globex.recharges >= 1
        assert any(i.state == "paid" and i.number for i in globex.invoices.values())
        # The mistyped card's invoice failed at collection, and was paid once after the replay.
        failed = state.failed_invoices[0]
        assert failed.step == "collect_payment"
        assert "pm_typo" in failed.error
        assert failed.outcome.startswith("completed"), failed.outcome
        assert (failed.paid, failed.charges) == (True, 1)
        client = stack.client
        invoice = await client.invoice(failed.invoice_id)
        assert invoice.state == "paid"
        attempts = await client.payment_attempts(failed.invoice_id)
        assert [a.status for a in attempts].count("succeeded") == 1
        # Without a terminal: one line per event, and status lines between them.
        printed = out.getvalue()
        assert "failure" in printed and "replay" in printed
        assert "rated" in printed and "webhooks" in printed
        assert "\x1b[" not in printed


# --- The view, from hand-made states ------------------------------------------------------


@pytest.mark.parametrize(
    ("remaining", "original", "bar"),
    [
        ("1.00", "1.00", "████████████"),
        ("0.50", "1.00", "██████······"),
        ("0.08", "1.00", "············"),  # less than a twelfth
        ("0", "1.00", "············"),
        ("0", "0", "············"),  # no pool at all
        ("3", "1", "████████████"),  # never wider than full
    ],
)
def test_a_balance_bar_shows_what_is_left(remaining: str, original: str, bar: str) -> None:
    assert balance_bar(D(remaining), D(original)) == bar


@pytest.mark.parametrize(
    ("amount", "places", "shown"),
    [
        (D("0.4"), 2, "$0.40"),
        (D("0.123456"), 4, "$0.1234"),
        (D("0.04995"), 4, "$0.0499"),  # just under $0.05 never reads as $0.05
        (D("5"), 2, "$5.00"),
    ],
)
def test_money_is_cut_to_fixed_places_in_dollars(amount: Decimal, places: int, shown: str) -> None:
    assert money(amount, places) == shown


def test_elapsed_time_is_minutes_and_seconds() -> None:
    assert [elapsed(s) for s in (0, 5.9, 65, 600)] == ["+00:00", "+00:05", "+01:05", "+10:00"]


def test_calls_per_second_count_only_the_recent_window() -> None:
    stats = ServiceStats("chat-api")
    for at in (0.0, 1.0, 2.0, 3.0, 4.0, 5.5):
        stats.record(at, D("0.01"))
    stats.record(5.6, None, "northwind: INSUFFICIENT_CREDIT")
    # Within (0.6, 5.6]: 1.0, 2.0, 3.0, 4.0, 5.5 and 5.6: six calls over five seconds.
    assert stats.per_second(5.6) == 6 / RATE_WINDOW_SECONDS
    assert (stats.rated, stats.refused, stats.charged) == (6, 1, D("0.06"))
    assert stats.last_refusal == "northwind: INSUFFICIENT_CREDIT"


def test_contract_terms_have_short_periods_and_only_globex_recharges() -> None:
    start = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    plan = DemoPlan(period_seconds=60, periods=20)
    terms = {c.name: contract_terms(c, f"{c.name}-1", plan, start) for c in CUSTOMERS}
    assert {t["billing_interval_seconds"] for t in terms.values()} == {60}
    assert terms["globex"]["term_end"] == (start + timedelta(minutes=20)).isoformat()
    assert [n for n, t in terms.items() if "auto_recharge" in t] == ["globex"]
    assert terms["initech"]["payment_method"] == "pm_typo"
    assert terms["northwind"]["overage_policy"] == "block"


def _state() -> DemoState:
    """A demo 75 s in: northwind drained, globex recharged, initech in overage."""
    state = DemoState(DemoPlan(), started=1000.0, banner="gRPC 127.0.0.1:50051")
    northwind, globex, initech = CUSTOMERS
    state.accounts = [
        DemoAccount(
            northwind,
            "northwind-1",
            "ctr_n",
            "pm_ok",
            pools=(PoolLine("free credit", D(0), D(1)),),
        ),
        DemoAccount(
            globex,
            "globex-1",
            "ctr_g",
            "pm_ok",
            pools=(
                PoolLine("free credit", D(0), D(1)),
                PoolLine("bought credit", D("1.234567"), D(2)),
            ),
            available=D("1.234567"),
            recharges=1,
            invoices={"inv_g": InvoiceSeen("inv_g", "INV-000002", "paid", D("5.00"))},
        ),
        DemoAccount(initech, "initech-1", "ctr_i", "pm_typo", overage=D("0.4321")),
    ]
    chat = ServiceStats("chat-api")
    for at in (1071.0, 1072.0, 1073.0):
        chat.record(at, D("0.005"))
    chat.record(1074.0, None, "northwind: INSUFFICIENT_CREDIT")
    state.services = {"chat-api": chat}
    state.note(1021.0, "alert", "globex: balance $0.3900 fell below $0.40")
    state.note(1066.0, "invoice", "globex: period closed, INV-000002 issued for $5.00")
    state.webhooks = 4
    return state


def test_the_screen_shows_pools_services_and_the_latest_events() -> None:
    screen = "\n".join(render_screen(_state(), now=1075.0))
    assert screen.startswith("rating dev --demo  +01:15   60-second billing periods")
    assert "gRPC 127.0.0.1:50051" in screen
    assert "northwind  free credit    ············     $0.0000 / $1.00   none yet" in screen
    assert "bought credit  ███████·····     $1.2345 / $2.00" in screen
    assert "1 issued; INV-000002 paid $5.00" in screen
    assert "card token mistyped (pm_typo), pays with pm_typo, overage $0.4321" in screen
    # 4 calls in the last five seconds; 3 rated for half a cent each.
    assert (
        "chat-api              0.8       3       1     $0.01   northwind: INSUFFICIENT_CREDIT"
        in (screen)
    )
    assert "+00:21  alert     globex: balance $0.3900 fell below $0.40" in screen
    assert "+01:06  invoice   globex: period closed, INV-000002 issued for $5.00" in screen
    assert "signatures verified: 4" in screen


def test_the_screen_keeps_only_the_latest_events() -> None:
    state = _state()
    for n in range(30):
        state.note(1100.0 + n, "alert", f"event {n}")
    screen = render_screen(state, now=1130.0, events=5)
    assert next(line for line in screen if "event" in line).endswith("event 25")
    assert screen[-1].endswith("event 29")


def test_long_events_wrap_under_their_text_to_fit_the_screen() -> None:
    state = _state()
    state.note(1070.0, "failure", "initech: INV-000004's workflow failed at collect_payment: " * 2)
    screen = render_screen(state, now=1075.0, width=60)
    at = screen.index("+01:10  failure   initech: INV-000004's workflow failed at")
    assert all(len(line) <= 60 for line in screen[at:])
    assert screen[at + 1].startswith(" " * 18 + "collect_payment:")


def test_a_status_line_sums_up_the_demo_on_one_line() -> None:
    line = status_line(_state(), now=1075.0)
    assert line == (
        "+01:15 rated 3, refused 1 (0.8/s)"
        " | northwind $0.0000, 0 invoice(s)"
        " | globex $1.2345, 1 invoice(s)"
        " | initech $0.0000 +overage $0.4321, 0 invoice(s)"
        " | webhooks 4"
    )


@pytest.mark.parametrize(
    ("topic", "data", "described"),
    [
        (
            "alert",
            {"contract_id": "ctr_g", "kind": "balance_below", "threshold": "0.40", "value": "0.39"},
            ("alert", "globex: balance $0.3900 fell below $0.40"),
        ),
        (
            "invoice.issued",
            {"contract_id": "ctr_i", "number": "INV-000003", "total": "5.43", "currency": "USD"},
            ("invoice", "initech: period closed, INV-000003 issued for $5.43"),
        ),
        (
            "recharge.succeeded",
            {"contract_id": "ctr_g", "recharge_id": "r1", "pool_id": "p", "amount": "2.00"},
            ("recharge", "globex: auto-recharge charged $2.00, credit granted"),
        ),
        (
            "payment.failed",
            {"contract_id": "ctr_n", "invoice_id": "inv_n", "decline_code": "card_declined"},
            ("payment", "northwind: payment of inv_n declined (card_declined)"),
        ),
        (
            "contract.suspended",
            {"contract_id": "ctr_n", "invoice_id": "inv_n"},
            ("contract", "northwind: contract suspended"),
        ),
        # Another contract of the tenant (the base demo customer, an earlier run): not shown.
        ("invoice.issued", {"contract_id": "ctr_other", "number": "INV-1", "total": "1"}, None),
        ("credit.expired", {"contract_id": "ctr_g"}, None),
    ],
)
def test_webhooks_become_feed_entries_about_the_demo_customers(
    topic: str, data: dict[str, str], described: tuple[str, str] | None
) -> None:
    assert describe_notification(topic, data, _state().accounts) == described
