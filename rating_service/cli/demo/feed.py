"""The event feed: a local webhook endpoint verifying each delivery, and what it tells the demo."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from rating_service.cli.demo.plan import ACTOR
from rating_service.cli.demo.state import DemoState, Note
from rating_service.cli.demo.view import describe_notification
from rating_service.outbox.topics import Topic
from rating_service.services.webhook import (
    EVENT_ID_HEADER,
    SIGNATURE_HEADER,
    InvalidSignature,
    Webhooks,
    verify_signature,
)

WEBHOOK_PATH = "/rating-dev-demo"
"""Path of the demo's local webhook endpoint; earlier runs' endpoints are found by it."""

FEED_TOPICS = (
    Topic.ALERT,
    Topic.INVOICE_ISSUED,
    Topic.PAYMENT_FAILED,
    Topic.RECHARGE_SUCCEEDED,
    Topic.RECHARGE_FAILED,
    Topic.AUTO_RECHARGE_DISABLED,
    Topic.CONTRACT_SUSPENDED,
    Topic.CONTRACT_REINSTATED,
)
"""The notifications the event feed shows."""


class NotificationReceiver:
    """A local webhook endpoint: checks each delivery's signature, passes each event on once."""

    def __init__(self, deliver: Callable[[str, dict[str, Any]], None]) -> None:
        self._deliver = deliver
        self._seen: set[str] = set()
        self._server: asyncio.Server | None = None
        self.secret = ""
        """Set once the endpoint is registered; until then deliveries are refused (retried)."""

    async def start(self) -> str:
        """Listen on a free local port; the endpoint's URL."""
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}{WEBHOOK_PATH}"

    async def close(self) -> None:
        """Stop listening."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            status = await self._answer(reader)
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode()
            )
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass  # a broken request: the sender retries it
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _answer(self, reader: asyncio.StreamReader) -> str:
        """Read one HTTP/1.1 request; the status line to answer it with."""
        _, path, _ = (await reader.readline()).decode().split(" ", 2)
        headers: dict[str, str] = {}
        while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = line.decode().partition(":")
            headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        if path != WEBHOOK_PATH:
            return "404 Not Found"
        if not self.secret:
            return "503 Service Unavailable"
        try:
            verify_signature(self.secret, headers.get(SIGNATURE_HEADER.lower(), ""), body)
        except InvalidSignature:
            return "401 Unauthorized"
        event_id = headers.get(EVENT_ID_HEADER.lower(), "")
        if event_id not in self._seen:  # deliveries are at least once
            self._seen.add(event_id)
            envelope = json.loads(body)
            self._deliver(str(envelope["topic"]), dict(envelope["data"]))
        return "204 No Content"


async def listen(notifications: Webhooks, tenant_id: str, receiver: NotificationReceiver) -> str:
    """Start the webhook receiver and register it for the feed's topics; its endpoint id."""
    for endpoint in await notifications.endpoints(tenant_id):
        # An earlier run that was killed left its endpoint behind; nobody listens there.
        if endpoint.enabled and urlsplit(endpoint.url).path == WEBHOOK_PATH:
            await notifications.disable_endpoint(tenant_id, endpoint.endpoint_id, ACTOR)
    url = await receiver.start()
    added = await notifications.add_endpoint(tenant_id, url, FEED_TOPICS, ACTOR)
    receiver.secret = added.secret
    return added.endpoint.endpoint_id


def take_notification(state: DemoState, topic: str, data: dict[str, Any], note: Note) -> None:
    """A verified webhook: count it, and put it in the feed if it is about a demo contract."""
    state.webhooks += 1
    described = describe_notification(topic, data, state.accounts)
    if described is None:
        return
    account = state.account(str(data.get("contract_id")))
    if account is not None and topic == Topic.RECHARGE_SUCCEEDED:
        account.recharges += 1
    if account is not None and topic == Topic.INVOICE_ISSUED:
        account.issued_notified.add(str(data.get("invoice_id")))
    note(*described)
