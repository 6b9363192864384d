"""Webhook notifications on a real worker, Temporal and PostgreSQL, to a receiver in the test.

The receiver is a few lines of asyncio HTTP/1.1 that verifies every request's signature with
`verify_signature`, as a tenant's receiver would, and answers with the status the test scripts.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import grpc
import pytest
from click.testing import CliRunner
from grpc import aio
from temporalio.client import Client, WorkflowExecutionStatus

from rating_client.gen.rating.v1 import webhook_pb2, webhook_pb2_grpc
from rating_service.cli import main
from rating_service.core.auth import Role
from rating_service.core.billing.invoice import InvoiceState
from rating_service.outbox.dispatcher import OutboxRow
from rating_service.outbox.topics import Topic
from rating_service.runtime.bootstrap import bootstrap
from rating_service.runtime.server import RunningServer, start_server
from rating_service.runtime.temporal import connect_temporal
from rating_service.services.webhook import (
    DeliveryOutcome,
    InvalidSignature,
    NotificationEvent,
    Webhooks,
    verify_signature,
)
from rating_service.settings import Settings
from rating_service.workflows.billing import billing_workflow_id
from rating_service.workflows.webhook import (
    DeliveryPolicy,
    EndpointOutcome,
    NotificationResult,
    NotificationWorkflow,
    notification_workflow_id,
    start_notifications,
)
from tests.conftest import TenantKeys, eventually, status_of
from tests.integration.billing import CATALOG, open_account
from tests.integration.cycles import (
    api_env,
    billing_stack,
    database,
    open_billing_contract,
    open_invoicing,
    record_history,
    running_worker,
    worker_settings,
    workflow_started,
)

FAST_RETRIES: dict[str, object] = {
    "webhook_timeout_seconds": 2.0,
    "webhook_retry_initial_seconds": 0.1,
    "webhook_retry_max_seconds": 0.2,
    "webhook_max_attempts": 3,
}
"""Retries a test can wait for: 0.1 s, then 0.2 s between attempts, 3 attempts."""


@dataclass(frozen=True)
class Received:
    """One request the receiver answered."""

    path: str
    headers: dict[str, str]
    body: bytes
    status: int
    verified: bool

    def json(self) -> dict[str, Any]:
        """The body, parsed."""
        parsed: dict[str, Any] = json.loads(self.body)
        return parsed


@dataclass
class Receiver:
    """A webhook receiver: per path, the endpoint's secret and the statuses to answer in turn."""

    port: int = 0
    secrets: dict[str, str] = field(default_factory=dict)
    scripted: dict[str, list[int]] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)

    def url(self, path: str) -> str:
        """The URL of one of its paths."""
        return f"http://127.0.0.1:{self.port}{path}"

    def at(self, path: str) -> list[Received]:
        """The requests to one path."""
        return [r for r in self.received if r.path == path]

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Answer one request, then close the connection."""
        try:
            _, path, _ = (await reader.readline()).decode().split(" ", 2)
            headers: dict[str, str] = {}
            while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
                name, _, value = line.decode().partition(":")
                headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            try:
                verify_signature(self.secrets[path], headers["rating-signature"], body)
                verified = True
            except (InvalidSignature, KeyError):
                verified = False
            queue = self.scripted.get(path, [])
            status = (queue.pop(0) if queue else 200) if verified else 400
            self.received.append(Received(path, headers, body, status, verified))
            writer.write(
                f"HTTP/1.1 {status} Scripted\r\nContent-Length: 4\r\n"
                "Connection: close\r\n\r\nnope".encode()
            )
            await writer.drain()
        finally:
            writer.close()


@asynccontextmanager
async def receiving() -> AsyncIterator[Receiver]:
    """A receiver listening on a free local port until the block ends."""
    receiver = Receiver()
    server = await asyncio.start_server(receiver.serve, "127.0.0.1", 0)
    receiver.port = server.sockets[0].getsockname()[1]
    try:
        yield receiver
    finally:
        server.close()
        await server.wait_closed()


@contextmanager
def refusing_port() -> Iterator[int]:
    """A local port bound but not listening: every connection to it is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as held:
        held.bind(("127.0.0.1", 0))
        yield int(held.getsockname()[1])


@asynccontextmanager
async def open_notifications(settings: Settings) -> AsyncIterator[Webhooks]:
    """The notifications service over the test's database."""
    async with bootstrap(settings) as components:
        yield components.webhooks


async def notification_result(temporal: Client, event_id: str) -> NotificationResult:
    """The notification workflow's result, once the dispatcher has started it and it is done."""
    handle = temporal.get_workflow_handle_for(
        NotificationWorkflow.run, notification_workflow_id(event_id)
    )
    await eventually(lambda: workflow_started(handle), timeout_seconds=15)
    async with asyncio.timeout(15):
        return await handle.result()


async def write_outbox(settings: Settings, tenant_id: str, topic: str, key: str) -> str:
    """An outbox row as another piece of the service writes it; its key (the event id).

    Only for topics nothing but notifications handles: a fake row of another would start
    that piece's workflow too.
    """
    async with database(settings) as conn:
        await conn.execute(
            "INSERT INTO outbox (tenant_id, topic, dedupe_key, payload) VALUES ($1, $2, $3, $4)",
            tenant_id,
            topic,
            key,
            json.dumps({"contract_id": "ctr_1", "pool_id": "pool_1", "remaining": "5"}),
        )
    return key


async def rating_cli(env: dict[str, str], *args: str, exit_code: int = 0) -> str:
    """Run `rating ARGS…` with this environment; its output (it must exit so)."""
    result = await asyncio.to_thread(CliRunner().invoke, main, list(args), env=env)
    assert result.exit_code == exit_code, result.output
    return result.output


async def test_a_low_balance_alert_is_delivered_once_signed_and_logged(
    settings: Settings, temporal_address: str, server: RunningServer, acme: TenantKeys
) -> None:
    async with (
        receiving() as receiver,
        open_notifications(settings) as notifications,
        billing_stack(
            settings, temporal_address, server, acme, catalog=CATALOG, **FAST_RETRIES
        ) as stack,
    ):
        client, temporal = stack.client, stack.temporal
        added = await notifications.add_endpoint(
            acme.tenant_id, receiver.url("/hooks"), ["alert"], "test"
        )
        receiver.secrets["/hooks"] = added.secret
        low: dict[str, object] = {"threshold_id": "low", "kind": "balance_below", "amount": "2"}
        account = await open_account(client, "cus-low", alert_thresholds=[low])
        await account.grant("4", grant_id="g-low")
        for n in range(3):  # 4 → 3 → 2 → 1: below 2 on the third call, once
            await account.call(f"low-{n}")
        async with database(settings) as conn:
            event_id = await conn.fetchval("SELECT dedupe_key FROM outbox WHERE topic = 'alert'")
        result = await notification_result(temporal, event_id)

    endpoint_id = added.endpoint.endpoint_id
    assert result == NotificationResult(event_id, [EndpointOutcome(endpoint_id, "delivered", 1)])
    [request] = receiver.received
    assert request.verified
    assert request.headers["rating-event-id"] == event_id
    assert request.headers["rating-topic"] == "alert"
    body = request.json()
    assert (body["id"], body["topic"], body["tenant_id"]) == (event_id, "alert", acme.tenant_id)
    data = body["data"]
    assert (data["kind"], data["contract_id"], data["threshold"]) == (
        "balance_below",
        account.contract_id,
        "2",
    )
    async with open_notifications(settings) as notifications:
        [logged] = await notifications.attempts(acme.tenant_id, event_id)
    assert (logged.endpoint_id, logged.attempt, logged.status_code) == (endpoint_id, 1, 200)
    assert (logged.succeeded, logged.error) == (True, None)


async def test_retries_until_an_endpoint_answers_and_give_up_on_one_that_never_does(
    settings: Settings, temporal_address: str, server: RunningServer, acme: TenantKeys
) -> None:
    config = worker_settings(settings, temporal_address, **FAST_RETRIES)
    temporal = await connect_temporal(config)
    # `rating webhooks …` acts through the test's server, as the tenant's admin key.
    url = api_env(server, acme.tokens[Role.ADMIN])
    with refusing_port() as port:
        async with receiving() as receiver:
            flaky = receiver.url("/flaky")
            added = await rating_cli(url, "webhooks", "add", flaky, "--topic", "expiry.warning")
            flaky_id, secret = added.split()[1], added.split()[3]
            receiver.secrets["/flaky"] = secret
            receiver.scripted["/flaky"] = [500, 500]  # then 200
            down = f"http://127.0.0.1:{port}/hooks"
            down_id = (await rating_cli(url, "webhooks", "add", down)).split()[1]
            event_id = await write_outbox(
                settings, acme.tenant_id, "expiry.warning", f"expiry.warning:{acme.tenant_id}:p:1"
            )
            async with running_worker(config):
                result = await notification_result(temporal, event_id)
                await record_history(
                    temporal, notification_workflow_id(event_id), "notification_retried"
                )

    # The workflow completes either way, with each endpoint's outcome.
    [delivered, failed] = sorted(result.endpoints, key=lambda e: e.endpoint_id != flaky_id)
    assert delivered == EndpointOutcome(flaky_id, "delivered", 3)
    assert (failed.endpoint_id, failed.outcome, failed.attempts) == (down_id, "failed", 3)
    assert "ConnectError" in failed.error
    assert [(r.status, r.verified) for r in receiver.received] == [
        (500, True),
        (500, True),
        (200, True),
    ]
    # The same notification each time: the same id and body; only the signature's time moves.
    assert len({r.body for r in receiver.received}) == 1
    assert {r.headers["rating-event-id"] for r in receiver.received} == {event_id}
    async with open_notifications(settings) as notifications:
        logged = await notifications.attempts(acme.tenant_id, event_id)
    assert [
        (a.attempt, a.status_code, a.succeeded) for a in logged if a.endpoint_id == flaky_id
    ] == [
        (1, 500, False),
        (2, 500, False),
        (3, 200, True),
    ]
    assert [(a.attempt, a.succeeded) for a in logged if a.endpoint_id == down_id] == [
        (1, False),
        (2, False),
        (3, False),
    ]
    assert {a.error for a in logged if a.endpoint_id == flaky_id} == {"HTTP 500: nope", None}
    table = await rating_cli(url, "webhooks", "deliveries", "--event", event_id)
    rows = [line.split() for line in table.splitlines()[1:]]
    assert [row[4:] for row in rows if row[3] == flaky_id] == [
        ["1", "failed", "(HTTP", "500:", "nope)"],
        ["2", "failed", "(HTTP", "500:", "nope)"],
        ["3", "delivered", "(HTTP", "200)"],
    ]
    assert [row[4:6] for row in rows if row[3] == down_id] == [
        [str(n), "failed"] for n in (1, 2, 3)
    ]
    listed = await rating_cli(url, "webhooks", "list")
    assert f"{flaky_id}  {flaky}" in listed and "expiry.warning" in listed
    assert f"{down_id}  {down}" in listed and "all" in listed
    assert secret not in listed  # shown once, when it was added
    assert "disabled" not in listed
    await rating_cli(url, "webhooks", "remove", down_id)
    assert "disabled" in await rating_cli(url, "webhooks", "list")
    refused = [
        ("add", "ftp://example.com/hooks", "is not an http(s) URL"),
        ("add", flaky, "--topic", "alerts", "unknown ['alerts']; the topics are alert, invoice"),
        ("remove", "whe_nope", "no webhook endpoint 'whe_nope'"),
    ]
    for *args, said in refused:
        output = await rating_cli(url, "webhooks", *args, exit_code=1)
        assert said in output


async def test_each_endpoint_gets_only_its_topics_and_a_disabled_one_nothing(
    settings: Settings, temporal_address: str, acme: TenantKeys
) -> None:
    config = worker_settings(settings, temporal_address, **FAST_RETRIES)
    temporal = await connect_temporal(config)
    subscriptions = {
        "/all": [],
        "/expiry": ["expiry.warning"],
        "/renewal": ["renewal.upcoming"],
        "/off": [],
    }
    async with receiving() as receiver, open_notifications(settings) as notifications:
        ids = {}
        for path, topics in subscriptions.items():
            added = await notifications.add_endpoint(
                acme.tenant_id, receiver.url(path), topics, "test"
            )
            receiver.secrets[path] = added.secret
            ids[path] = added.endpoint.endpoint_id
        await notifications.disable_endpoint(acme.tenant_id, ids["/off"], "test")
        expiry = await write_outbox(settings, acme.tenant_id, "expiry.warning", "expiry:t:p1")
        renewal = await write_outbox(settings, acme.tenant_id, "renewal.upcoming", "renewal:t:c1")
        async with running_worker(config):
            warned = await notification_result(temporal, expiry)
            reminded = await notification_result(temporal, renewal)
            # The dispatcher delivering the same row again starts nothing and sends nothing.
            handle = temporal.get_workflow_handle(notification_workflow_id(expiry))
            run_id = (await handle.describe()).run_id
            row = OutboxRow(
                acme.tenant_id,
                Topic.EXPIRY_WARNING,
                expiry,
                {},
                (await handle.describe()).start_time,
            )
            start = start_notifications(
                temporal, config.temporal_task_queue, notifications, DeliveryPolicy(1, 1, 1, 1)
            )
            await start(row)
            await start(row)
            assert (await handle.describe()).run_id == run_id

        assert [e.endpoint_id for e in warned.endpoints] == [ids["/all"], ids["/expiry"]]
        assert [e.endpoint_id for e in reminded.endpoints] == [ids["/all"], ids["/renewal"]]
        got = {(r.path, r.headers["rating-topic"]) for r in receiver.received}
        assert got == {
            ("/all", "expiry.warning"),
            ("/all", "renewal.upcoming"),
            ("/expiry", "expiry.warning"),
            ("/renewal", "renewal.upcoming"),
        }
        assert len(receiver.received) == 4 and all(r.verified for r in receiver.received)

        # Delivering again (a retried activity, an ops reset) sends nothing already delivered,
        # and nothing to an endpoint disabled since.
        event = NotificationEvent(expiry, acme.tenant_id, "expiry.warning", "2026-01-01", {})
        again = await notifications.deliver(event, ids["/expiry"], 1, 1.0)
        await notifications.disable_endpoint(acme.tenant_id, ids["/all"], "test")
        disabled = await notifications.deliver(event, ids["/all"], 1, 1.0)
        assert again.outcome is DeliveryOutcome.ALREADY_DELIVERED
        assert disabled.outcome is DeliveryOutcome.ENDPOINT_DISABLED
        assert len(receiver.received) == 4


async def test_an_endpoint_that_is_down_does_not_delay_invoices(
    settings: Settings, temporal_address: str, server: RunningServer, acme: TenantKeys
) -> None:
    with refusing_port() as port:
        async with (
            open_notifications(settings) as notifications,
            # Retried for longer than the whole billing cycle takes: still failing when it ends.
            billing_stack(
                settings,
                temporal_address,
                server,
                acme,
                webhook_timeout_seconds=1.0,
                webhook_retry_initial_seconds=0.2,
                webhook_retry_max_seconds=0.5,
                webhook_max_attempts=200,
            ) as stack,
        ):
            client, temporal, config = stack.client, stack.temporal, stack.worker_config
            await notifications.add_endpoint(
                acme.tenant_id, f"http://127.0.0.1:{port}/hooks", [], "test"
            )
            contract = await open_billing_contract(client, "cus_down", period_seconds=2, periods=1)
            billing = temporal.get_workflow_handle(
                billing_workflow_id(acme.tenant_id, contract.contract_id)
            )
            await eventually(lambda: workflow_started(billing), timeout_seconds=15)
            async with asyncio.timeout(30):
                assert await billing.result() == "ended"
            async with open_invoicing(settings) as invoicing:
                invoices = await invoicing.invoices.invoices(acme.tenant_id, contract.contract_id)
            async with database(settings) as conn:
                rows = await conn.fetch(
                    "SELECT dedupe_key FROM outbox WHERE topic = 'invoice.issued'"
                )
            events = {row["dedupe_key"] for row in rows}

            async def every_invoice_notification_has_failed() -> bool:
                attempts = await notifications.attempts(acme.tenant_id, limit=1000)
                return {a.event_id for a in attempts if a.topic == "invoice.issued"} >= events

            await eventually(every_invoice_notification_has_failed, timeout_seconds=15)
            attempts = await notifications.attempts(acme.tenant_id, limit=1000)
            statuses = []
            for event_id in events:
                handle = temporal.get_workflow_handle(notification_workflow_id(event_id))
                statuses.append((await handle.describe()).status)
                await handle.terminate("test over")  # it would retry for a while yet

    # Issued at the billing date (plus the one-second grace window) and paid, on time.
    assert len(invoices) == len(events) == 2
    for invoice in invoices:
        assert invoice.state is InvoiceState.PAID
        assert invoice.issued_at is not None
        late_by = invoice.issued_at - invoice.billing_date
        assert late_by < timedelta(seconds=config.invoice_grace_seconds + 5), invoice.invoice_id
    assert attempts and not any(a.succeeded for a in attempts)
    assert all("ConnectError" in (a.error or "") for a in attempts)
    assert statuses == [WorkflowExecutionStatus.RUNNING] * len(events)


async def test_an_operator_redelivers_a_delivered_notification_once_per_request(
    settings: Settings, temporal_address: str, acme: TenantKeys, globex: TenantKeys
) -> None:
    config = worker_settings(settings, temporal_address, **FAST_RETRIES)
    temporal = await connect_temporal(config)
    async with receiving() as receiver, open_notifications(settings) as notifications:
        added = await notifications.add_endpoint(acme.tenant_id, receiver.url("/hooks"), [], "test")
        receiver.secrets["/hooks"] = added.secret
        endpoint_id = added.endpoint.endpoint_id
        event_id = await write_outbox(settings, acme.tenant_id, "expiry.warning", "expiry:r:p1")
        running = await start_server(config)
        try:
            async with (
                running_worker(config),
                aio.insecure_channel(f"127.0.0.1:{running.port}") as channel,
            ):
                await notification_result(temporal, event_id)
                stub = webhook_pb2_grpc.WebhookServiceStub(channel)
                ops = acme.metadata(Role.OPS)
                again = webhook_pb2.RedeliverWebhookRequest(
                    event_id=event_id, endpoint_id=endpoint_id, request_id="lost-it"
                )
                first = await stub.RedeliverWebhook(again, metadata=ops)
                second = await stub.RedeliverWebhook(again, metadata=ops)  # the same request
                assert first.workflow_id == second.workflow_id
                async with asyncio.timeout(15):
                    result = await temporal.get_workflow_handle(first.workflow_id).result()
                assert result["endpoints"][0]["outcome"] == "delivered"
                # `rating webhooks redeliver` is the same call: the same request id, the same
                # redelivery (sent once); an unknown notification is refused, and says so.
                cli = api_env(running, acme.tokens[Role.OPS])
                said = await rating_cli(
                    cli,
                    "webhooks",
                    "redeliver",
                    event_id,
                    "--endpoint",
                    endpoint_id,
                    "--request-id",
                    "lost-it",
                )
                assert said.splitlines()[1].startswith(f"workflow {first.workflow_id};")
                unknown = await rating_cli(
                    cli, "webhooks", "redeliver", "nope", "--endpoint", endpoint_id, exit_code=1
                )
                assert "status: NOT_FOUND NOTIFICATION_NOT_FOUND" in unknown
                redeliver = webhook_pb2.RedeliverWebhookRequest
                for wrong, metadata, reason in (
                    (
                        redeliver(event_id="nope", endpoint_id=endpoint_id, request_id="x"),
                        ops,
                        "NOTIFICATION_NOT_FOUND",
                    ),
                    (
                        redeliver(event_id=event_id, endpoint_id="whe_nope", request_id="x"),
                        ops,
                        "WEBHOOK_ENDPOINT_NOT_FOUND",
                    ),
                    (again, globex.metadata(Role.OPS), "NOTIFICATION_NOT_FOUND"),
                ):
                    with pytest.raises(aio.AioRpcError) as refused:
                        await stub.RedeliverWebhook(wrong, metadata=metadata)
                    assert status_of(refused.value) == (grpc.StatusCode.NOT_FOUND, reason)
        finally:
            await running.stop(0.5)
        attempts = await notifications.attempts(acme.tenant_id, event_id)

    # The first delivery and the redelivery, byte for byte the same notification, both logged.
    first_sent, resent = receiver.at("/hooks")
    assert resent.body == first_sent.body and resent.verified
    assert resent.headers["rating-event-id"] == event_id
    assert [(a.endpoint_id, a.succeeded) for a in attempts] == [(endpoint_id, True)] * 2
