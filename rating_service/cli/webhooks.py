"""`rating webhooks`: webhook endpoints, their delivery log and the keys sealing their secrets."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import click

from rating_service.cli.command_line import (
    T,
    echo_table,
    run_async,
    tenant_option,
)
from rating_service.cli.tenant_services import components, tenant_components

if TYPE_CHECKING:
    from rating_service.services.webhook import NewEndpoint, Webhooks
    from rating_service.store.webhook import DeliveryAttempt, WebhookEndpoint


@click.group()
def webhooks() -> None:
    """Webhook endpoints and their delivery log (operator commands, straight to the database)."""


@webhooks.command("add")
@click.argument("url")
@tenant_option
@click.option(
    "--topic",
    "topics",
    multiple=True,
    help="A topic it takes, e.g. alert or invoice.issued (repeat; default: every topic).",
)
def webhooks_add(url: str, tenant_name: str, topics: tuple[str, ...]) -> None:
    """Add an endpoint; prints its id and its signing secret, which is shown this once."""
    actor = f"cli:{os.environ.get('USER', 'operator')}"
    added: NewEndpoint = _notifications_call(
        tenant_name,
        lambda notifications, tenant_id: notifications.add_endpoint(tenant_id, url, topics, actor),
    )
    click.echo(f"endpoint {added.endpoint.endpoint_id}")
    click.echo(f"secret   {added.secret}")
    click.echo("keep the secret now (it is not shown again): receivers verify signatures with it")


@webhooks.command("list")
@tenant_option
def webhooks_list(tenant_name: str) -> None:
    """List the tenant's endpoints, enabled and disabled (secrets are never shown)."""
    found: list[WebhookEndpoint] = _notifications_call(
        tenant_name, lambda notifications, tenant_id: notifications.endpoints(tenant_id)
    )
    if not found:
        click.echo("no webhook endpoints: add one with `rating webhooks add URL`")
        return
    rows = [("ENDPOINT", "URL", "TOPICS", "STATE", "CREATED")]
    rows += [
        (
            endpoint.endpoint_id,
            endpoint.url,
            "all" if endpoint.topics is None else ",".join(endpoint.topics),
            "enabled"
            if endpoint.disabled_at is None
            else f"disabled {endpoint.disabled_at.isoformat()}",
            endpoint.created_at.isoformat(),
        )
        for endpoint in found
    ]
    echo_table(rows, right_aligned=set())


@webhooks.command("remove")
@click.argument("endpoint_id")
@tenant_option
def webhooks_remove(endpoint_id: str, tenant_name: str) -> None:
    """Disable an endpoint: nothing more is sent to it; its delivery log is kept."""
    actor = f"cli:{os.environ.get('USER', 'operator')}"
    _notifications_call(
        tenant_name,
        lambda notifications, tenant_id: notifications.disable_endpoint(
            tenant_id, endpoint_id, actor
        ),
    )
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
@tenant_option
@click.option("--event", "event_id", help="Only this notification's (its Rating-Event-Id).")
@click.option(
    "--limit", type=click.IntRange(min=1), default=50, show_default=True, help="Most to show."
)
def webhooks_deliveries(tenant_name: str, event_id: str | None, limit: int) -> None:
    """List delivery attempts, latest last: one row per attempt, with the answer or error."""
    found: list[DeliveryAttempt] = _notifications_call(
        tenant_name,
        lambda notifications, tenant_id: notifications.attempts(tenant_id, event_id, limit),
    )
    if not found:
        click.echo("no delivery attempts" + (f" of {event_id}" if event_id else " yet"))
        return
    rows = [("AT", "EVENT", "TOPIC", "ENDPOINT", "ATTEMPT", "RESULT")]
    rows += [
        (
            "" if attempt.at is None else attempt.at.isoformat(timespec="seconds"),
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


def _notifications_call(tenant_name: str, call: Callable[[Webhooks, str], Awaitable[T]]) -> T:
    """Make one call on the notifications of the tenant named (resolved to its id)."""

    async def run() -> T:
        async with tenant_components(tenant_name) as (built, caller):
            return await call(built.webhooks, caller.tenant_id)

    return run_async(run)


def _run_on_notifications(call: Callable[[Webhooks], Awaitable[T]]) -> T:
    """Make one call on the notifications service, with the configured webhook-secret keys."""

    async def run() -> T:
        async with components() as built:
            return await call(built.webhooks)

    return run_async(run)
