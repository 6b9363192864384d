"""The console in a real browser: the customer portal and the operator pages, end to end.

Headless Chromium (Debian's) drives the console, which calls a real server on a real
PostgreSQL; the invoice scenarios run a real Temporal worker as well.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from playwright.async_api import Page, expect

from rating_client import RatingClient
from rating_client.gen.rating.v1 import invoice_pb2, portal_pb2
from rating_service.console.serve import RunningConsole
from rating_service.core.auth import Role
from rating_service.core.portal import PortalGrant, sign_portal_token
from rating_service.failpoints import AFTER_NUMBER_ASSIGNED
from rating_service.runtime.server import RunningServer, start_server
from rating_service.runtime.temporal import connect_temporal
from rating_service.settings import Settings
from tests.conftest import PORTAL_SECRET, TenantKeys, eventually
from tests.integration.billing import open_account
from tests.integration.browser.conftest import (
    console_for,
    screenshot_path,
    serious_accessibility_violations,
)
from tests.integration.cycles import (
    billing_stack,
    credit,
    open_billing_contract,
    running_worker,
    worker_settings,
)
from tests.integration.ops.test_ops_replay import opening_invoice_failed, ops_server
from tests.integration.workflows.test_notifications import (
    FAST_RETRIES,
    notification_result,
    open_notifications,
    receiving,
    write_outbox,
)

EXPECT_MS = 15_000


async def portal_link(client: RatingClient, customer_id: str, ttl_seconds: int = 0) -> str:
    """A portal token from CreatePortalSession, asked with the client's key."""
    reply = await client.call(
        client.portal.CreatePortalSession,
        portal_pb2.CreatePortalSessionRequest(customer_id=customer_id, ttl_seconds=ttl_seconds),
    )
    return reply.token


async def sign_in(page: Page, console_url: str, key: str) -> None:
    await page.goto(f"{console_url}/ops/login")
    await page.get_by_label("API key").fill(key)
    await page.get_by_role("button", name="Sign in").click()


async def test_a_customer_sees_a_pool_drop_live_and_downloads_an_invoice(
    settings: Settings,
    temporal_address: str,
    server: RunningServer,
    acme: TenantKeys,
    page: Page,
    tmp_path: Path,
) -> None:
    async with billing_stack(settings, temporal_address, server, acme) as stack:
        contract = await open_billing_contract(
            stack.client,
            "cus_portal",
            period_seconds=3600,
            periods=1,
            spend_cap="50",
            alert_thresholds=[
                {"threshold_id": "cap-80", "kind": "spend_above_cap_percent", "percent": "80"}
            ],
        )
        await stack.client.call(
            stack.client.contracts.AddCommitment, credit(contract.contract_id, "100")
        )
        invoices: list[invoice_pb2.Invoice] = []

        async def opening_invoice_issued() -> bool:
            listed = await stack.client.call(
                stack.client.invoicing.ListInvoices,
                invoice_pb2.ListInvoicesRequest(customer_id="cus_portal"),
            )
            invoices[:] = [i for i in listed.invoices if i.number]
            return bool(invoices)

        await eventually(opening_invoice_issued, timeout_seconds=60)
        token = await portal_link(stack.client, "cus_portal")
        console = await console_for(server)
        try:
            await page.goto(f"{console.url}/portal/{token}")
            await expect(page.get_by_role("heading", level=1)).to_have_text("cus_portal Inc.")
            remaining = page.locator(".pool .remaining")
            await expect(remaining).to_have_text("100")

            # A call is rated while the page is open: the pool drops without a reload.
            await stack.client.rate_and_debit(
                event_id="portal-call-1",
                customer_id="cus_portal",
                event_type="api.call",
                properties={},
            )
            await expect(remaining).to_have_text("99", timeout=EXPECT_MS)  # 100 − 1 call × 1
            await expect(page.locator("#usage-total")).to_have_text("1", timeout=EXPECT_MS)
            spend = page.locator("section", has=page.locator("#spend-h"))
            await expect(spend).to_contain_text("1 of a 50 USD cap this period")
            await expect(spend).to_contain_text("80%")
            # Day by day: today's one event, charged 1.
            await expect(page.locator("table.daily tbody tr")).to_have_count(1)
            await expect(page.locator("table.daily tbody td").nth(2)).to_have_text("1")

            invoice = invoices[0]
            row = page.locator(f'tr[data-invoice="{invoice.invoice_id}"]')
            await expect(row).to_contain_text(invoice.number)
            async with page.expect_download() as downloading:
                await row.get_by_role("link", name="HTML").click()
            download = await downloading.value
            saved = tmp_path / download.suggested_filename
            await download.save_as(saved)
            assert invoice.number in saved.read_text()
            async with page.expect_download() as downloading:
                await row.get_by_role("link", name="PDF").click()
            pdf = await downloading.value
            pdf_path = tmp_path / pdf.suggested_filename
            await pdf.save_as(pdf_path)
            assert pdf_path.read_bytes().startswith(b"%PDF")

            # The price calculator quotes on the customer's own terms: 250 calls × 1.
            await page.get_by_label("Quantity").fill("250")
            await page.get_by_role("button", name="Quote").click()
            await expect(page.locator("#quote-total")).to_have_text("250 USD")

            assert await serious_accessibility_violations(page) == []
            shot = screenshot_path("console-portal.png")
            if shot is not None:
                await page.screenshot(path=str(shot), full_page=True)
        finally:
            await console.stop()


async def test_an_expired_or_tampered_link_is_refused(
    server: RunningServer,
    client: RatingClient,
    acme: TenantKeys,
    console: RunningConsole,
    page: Page,
) -> None:
    await open_account(client, "cust-a")
    await open_account(client, "cust-b")
    url = console.url
    token = await portal_link(client, "cust-a")
    await page.goto(f"{url}/portal/{token}")
    await expect(page.get_by_role("heading", level=1)).to_have_text("cust-a")

    # Genuinely signed, but its time is up.
    expired = sign_portal_token(
        PORTAL_SECRET,
        PortalGrant(acme.tenant_id, "cust-a", datetime.now(UTC) - timedelta(seconds=1), "n"),
    )
    response = await page.goto(f"{url}/portal/{expired}")
    assert response is not None and response.status == 401
    await expect(page.get_by_role("heading", level=1)).to_have_text("This link has expired")

    # One character of the signature changed.
    head, _, signature = token.rpartition(".")
    tampered = f"{head}.{'A' if signature[0] != 'A' else 'B'}{signature[1:]}"
    response = await page.goto(f"{url}/portal/{tampered}")
    assert response is not None and response.status == 401
    await expect(page.get_by_role("heading", level=1)).to_have_text("This link is not valid")
    assert "cust-a" not in await page.content()


async def test_a_rater_key_opens_no_operator_page(
    server: RunningServer,
    client: RatingClient,
    acme: TenantKeys,
    console: RunningConsole,
    page: Page,
) -> None:
    url = console.url
    await open_account(client, "cust-a")
    await sign_in(page, url, acme.tokens[Role.RATER])
    await expect(page.get_by_role("heading", level=1)).to_have_text(
        "This key opens no operator page"
    )
    for path in ("/ops", "/ops/customers", "/ops/invoices/failed", "/ops/webhooks"):
        response = await page.goto(f"{url}{path}")
        assert response is not None and response.status == 403, path
        assert "cust-a" not in await page.content()
    # And a bad key opens no session at all.
    await sign_in(page, url, "key_nothing.secret")
    await expect(page.locator("p.error")).to_contain_text("unknown or revoked")


async def test_an_ops_user_replays_a_failed_invoice_and_sees_it_finalized(
    settings: Settings,
    temporal_address: str,
    server: RunningServer,
    acme: TenantKeys,
    page: Page,
) -> None:
    async with billing_stack(
        settings, temporal_address, server, acme, failpoints=f"{AFTER_NUMBER_ASSIGNED}=1"
    ) as stack:
        contract = await open_billing_contract(
            stack.client, "cus_replay", period_seconds=60, periods=1
        )
        failed = await opening_invoice_failed(stack, acme, contract)
        async with ops_server(stack) as ops:
            console = await console_for(ops)
            try:
                await sign_in(page, console.url, acme.tokens[Role.OPS])
                await expect(page.get_by_role("heading", level=1)).to_have_text("Overview")
                await page.get_by_role("link", name="Failed invoices").first.click()
                run = page.locator(f'section.run[data-workflow="{failed.workflow_id}"]')
                await expect(run).to_contain_text("finalize_invoice")
                await expect(run).to_contain_text("failpoint")
                shot = screenshot_path("console-ops.png")
                if shot is not None:
                    await page.screenshot(path=str(shot), full_page=True)
                assert await serious_accessibility_violations(page) == []

                await run.get_by_label("Reason").fill("finalize crashed")
                await run.get_by_role("button", name="Plan the replay (dry run)").click()
                await expect(page.get_by_role("heading", level=1)).to_contain_text("Replay plan")
                await expect(page.locator(".effects")).to_contain_text("keeps its number")
                await expect(page.get_by_text("Nothing has changed yet.")).to_be_visible()

                await page.get_by_role("button", name="Replay now").click()
                await expect(page.locator(".outcome-line .outcome")).to_have_text(
                    "completed", timeout=90_000
                )
                await page.get_by_role("link", name="Back to failed invoices").click()
                await expect(page.locator("p.ok")).to_have_text("No failed invoice workflows.")
                await expect(page.locator("td.outcome").first).to_have_text("completed")
                # The run's page: every step completed now, and the replay with who and why.
                await page.get_by_role("link", name=failed.workflow_id).first.click()
                await expect(page.locator("tr.step", has_text="finalize_invoice")).to_contain_text(
                    "completed"
                )
                await expect(page.get_by_text("finalize crashed")).to_be_visible()

                # And the books still balance after the replay.
                await page.get_by_role("link", name="Overview").click()
                await page.get_by_role("button", name="Reconcile the ledger").click()
                await expect(page.locator("#reconcile-result")).to_contain_text("No drift")

                listed = await stack.client.call(
                    stack.client.invoicing.ListInvoices,
                    invoice_pb2.ListInvoicesRequest(customer_id="cus_replay"),
                )
                assert [i.state for i in listed.invoices] == ["paid"]
            finally:
                await console.stop()


async def test_an_ops_user_redelivers_a_webhook(
    settings: Settings, temporal_address: str, acme: TenantKeys, page: Page
) -> None:
    config = worker_settings(settings, temporal_address, **FAST_RETRIES)
    temporal = await connect_temporal(config)
    async with receiving() as receiver, open_notifications(settings) as notifications:
        added = await notifications.add_endpoint(acme.tenant_id, receiver.url("/hooks"), [], "test")
        receiver.secrets["/hooks"] = added.secret
        event_id = await write_outbox(settings, acme.tenant_id, "expiry.warning", "expiry:c:p1")
        running = await start_server(config)
        try:
            async with running_worker(config):
                await notification_result(temporal, event_id)
                assert len(receiver.at("/hooks")) == 1
                console = await console_for(running)
                try:
                    await sign_in(page, console.url, acme.tokens[Role.OPS])
                    await page.get_by_role("link", name="Webhooks").click()
                    row = page.locator("tr", has_text=event_id).first
                    await expect(row).to_contain_text("delivered (200)")
                    await row.get_by_role("button", name="Redeliver").click()
                    await expect(page.get_by_role("status")).to_contain_text("Redelivery started")
                    await eventually(lambda: len(receiver.at("/hooks")) == 2, timeout_seconds=30)
                    again = receiver.at("/hooks")[1]
                    assert again.verified and again.json()["id"] == event_id
                finally:
                    await console.stop()
        finally:
            await running.stop(0.5)
