"""`rating dev --demo` on a real server, worker, Temporal and PostgreSQL, with 3-second periods."""

from __future__ import annotations

import asyncio
import io
from decimal import Decimal

from rating_service.cli.catalog_file import read_catalog_file
from rating_service.cli.demo.plan import DemoPlan
from rating_service.cli.demo.run import Demo
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
