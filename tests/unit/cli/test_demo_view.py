"""The demo's view, rendered from hand-made states without a terminal."""

from __future__ import annotations

from decimal import Decimal

import pytest

from rating_service.cli.demo.plan import CUSTOMERS, DemoPlan
from rating_service.cli.demo.state import (
    RATE_WINDOW_SECONDS,
    DemoAccount,
    DemoState,
    InvoiceSeen,
    PoolLine,
    ServiceStats,
)
from rating_service.cli.demo.view import (
    balance_bar,
    describe_notification,
    elapsed,
    money,
    render_screen,
    status_line,
)

D = Decimal


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
