"""`rating webhooks`: webhook endpoints, their delivery log and the keys sealing their secrets."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import click

from rating_service.cli.api_client import api_call, moment
from rating_service.cli.command_line import (
    T,
    echo_table,
    run_async,
)
from rating_service.cli.tenant_services import components

if TYPE_CHECKING:
    from rating_client import RatingClient
    from rating_client.gen.rating.v1 import webhook_pb2
    from rating_service.services.webhook import Webhooks


@click.group()
def webhooks() -> None:
    """Webhook endpoints and their delivery log (through the API), and the keys sealing their
    secrets (`new-key`, `reencrypt`: straight to the database, with RATING_DATABASE_URL)."""


@webhooks.command("add")
@click.argument("url")
@click.option(
    "--topic",
    "topics",
    multiple=True,
    help="A topic it takes, e.g. alert or invoice.issued (repeat; default: every topic).",
)
def webhooks_add(url: str, topics: tuple[str, ...]) -> None:
    """Add an endpoint; prints its id and its signing secret, which is shown this once.

    Through the API (`CreateWebhookEndpoint`, an admin key).
    """
    added: webhook_pb2.CreateWebhookEndpointResponse = api_call(
        lambda client: client.create_webhook_endpoint(url, topics)
    )
    click.echo(f"endpoint {added.endpoint.endpoint_id}")
    click.echo(f"secret   {added.secret}")
    click.echo("keep the secret now (it is not shown again): receivers verify signatures with it")


@webhooks.command("list")
def webhooks_list() -> None:
    """List the endpoints, enabled and disabled (secrets are never shown).

    Through the API (`ListWebhookEndpoints`, an admin or ops key).
    """

    async def every_page(client: RatingClient) -> list[webhook_pb2.WebhookEndpoint]:
        found: list[webhook_pb2.WebhookEndpoint] = []
        token = ""
        while True:
            page = await client.webhook_endpoints(page_size=500, page_token=token)
            found += page.endpoints
            token = page.next_page_token
            if not token:
                return found

    found = api_call(every_page)
    if not found:
        click.echo("no webhook endpoints: add one with `rating webhooks add URL`")
        return
    rows = [("ENDPOINT", "URL", "TOPICS", "STATE", "CREATED")]
    rows += [
        (
            endpoint.endpoint_id,
            endpoint.url,
            ",".join(endpoint.topics) or "all",
            f"disabled {moment(endpoint.disabled_at)}"
            if endpoint.HasField("disabled_at")
            else "enabled",
            moment(endpoint.created_at),
        )
        for endpoint in found
    ]
    echo_table(rows, right_aligned=set())


@webhooks.command("remove")
@click.argument("endpoint_id")
def webhooks_remove(endpoint_id: str) -> None:
    """Disable an endpoint: nothing more is sent to it; its delivery log is kept.

    Through the API (`DisableWebhookEndpoint`, an admin key).
    """
    api_call(lambda client: client.disable_webhook_endpoint(endpoint_id), _ENDPOINT_NEXT_STEPS)
    click.echo(f"disabled {endpoint_id} (its delivery log is kept)")


@webhooks.command("new-key")
@click.option(
    "--id",
    "key_id",
    default=lambda: datetime.now(UTC).strftime("%Y%m%d"),
    show_default="today, YYYYMMDD",
    help="The key's id, stored beside every secret it seals.",
)
def webhooks_new_key(key_id: str) -> None:
    """Print a new key for RATING_WEBHOOK_SECRET_KEYS (nothing is stored)."""
    from rating_service.core.encryption import new_key

    try:
        key = new_key(key_id)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(key)
    click.echo(
        "put it first in RATING_WEBHOOK_SECRET_KEYS (id:key,id:key; first encrypts, all decrypt),"
        " restart the worker, then run `rating webhooks reencrypt`",
        err=True,
    )


@webhooks.command("reencrypt")
def webhooks_reencrypt() -> None:
    """Re-encrypt every tenant's webhook secrets with the first RATING_WEBHOOK_SECRET_KEYS key."""

    async def reseal(notifications: Webhooks) -> tuple[dict[str, int], dict[str, int]]:
        return await notifications.reseal_secrets(), await notifications.secrets_per_key()

    moved, per_key = _run_on_notifications(reseal)
    for key_id, count in moved.items():
        click.echo(f"re-encrypted {count} secret(s) from key {key_id!r}")
    click.echo(
        "secrets per key now: "
        + (", ".join(f"{key_id!r} {count}" for key_id, count in per_key.items()) or "none")
    )
    click.echo("keys no secret uses can be dropped from RATING_WEBHOOK_SECRET_KEYS")


@webhooks.command("deliveries")
@click.option("--event", "event_id", help="Only this notification's (its Rating-Event-Id).")
@click.option(
    "--limit",
    type=click.IntRange(min=1, max=1000),
    default=50,
    show_default=True,
    help="Most to show.",
)
def webhooks_deliveries(event_id: str | None, limit: int) -> None:
    """List delivery attempts, latest last: one row per attempt, with the answer or error.

    Through the API (`ListWebhookDeliveries`, an admin or ops key).
    """
    found: list[webhook_pb2.WebhookDelivery] = api_call(
        lambda client: client.webhook_deliveries(event_id=event_id or "", limit=limit)
    )
    if not found:
        click.echo("no delivery attempts" + (f" of {event_id}" if event_id else " yet"))
        return
    rows = [("AT", "EVENT", "TOPIC", "ENDPOINT", "ATTEMPT", "RESULT")]
    rows += [
        (
            moment(attempt.at) if attempt.HasField("at") else "",
            attempt.event_id,
            attempt.topic,
            attempt.endpoint_id,
            str(attempt.attempt),
            f"delivered (HTTP {attempt.status_code})"
            if attempt.succeeded
            else f"failed ({attempt.error or attempt.status_code})",
        )
        for attempt in found
    ]
    echo_table(rows, right_aligned={4})


@webhooks.command("redeliver")
@click.argument("event_id")
@click.option("--endpoint", "endpoint_id", required=True, help="An enabled endpoint's id.")
@click.option(
    "--request-id",
    default=lambda: f"cli-{uuid.uuid4().hex}",
    show_default="a new one",
    help="Your idempotency key: the same one again is the same redelivery, sent once.",
)
def webhooks_redeliver(event_id: str, endpoint_id: str, request_id: str) -> None:
    """Send a notification to an endpoint again (its receiver lost it), with the same body and
    event id, retried like the first; `rating webhooks deliveries --event ID` shows the attempts.

    Through the API (`RedeliverWebhook`, an admin or ops key).
    """
    workflow_id: str = api_call(
        lambda client: client.redeliver_webhook(
            event_id=event_id, endpoint_id=endpoint_id, request_id=request_id
        ),
        _ENDPOINT_NEXT_STEPS,
    )
    click.echo(f"redelivering {event_id} to {endpoint_id} (request {request_id})")
    click.echo(f"workflow {workflow_id}; `rating webhooks deliveries --event {event_id}`")


_ENDPOINT_NEXT_STEPS = {
    "WEBHOOK_ENDPOINT_NOT_FOUND": "`rating webhooks list` lists the endpoints of this key's tenant",
    "WEBHOOK_ENDPOINT_DISABLED": "`rating webhooks add URL` adds an endpoint to send to",
    "TEMPORAL_UNAVAILABLE": (
        "nothing was sent: the server must reach Temporal for this (its RATING_TEMPORAL_ADDRESS)"
    ),
}


def _run_on_notifications(call: Callable[[Webhooks], Awaitable[T]]) -> T:
    """Make one call on the notifications service, with the configured webhook-secret keys."""

    async def run() -> T:
        async with components() as built:
            return await call(built.webhooks)

    return run_async(run)
