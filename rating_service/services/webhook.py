"""Webhooks: outbox events sent to tenants' webhook endpoints, signed, every attempt logged.

What goes out: the outbox topics that are notifications (`NOTIFICATION_TOPICS`, defined with
every topic in `rating_service.outbox.topics`). Each notification is an HTTP POST of a JSON body
`{"id", "topic", "tenant_id", "created_at", "data"}` (`data` is the outbox row's payload; `id`
its business key, the same on every retry, so receivers drop duplicates by it), with the headers

    Rating-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of f"{t}.{raw body}" with the secret>
    Rating-Event-Id: <id>
    Rating-Topic: <topic>

A receiver checks the signature over the raw body, before parsing it, with `verify_signature`
(or the same few lines in its own language) and refuses stale timestamps, so a captured request
cannot be replayed later. Any 2xx answer is a delivery; anything else, including a redirect, a
timeout or a refused connection, is a failed attempt that the notification workflow retries with
backoff (`rating_service/workflows/webhook.py`).

Endpoints' signing secrets are stored encrypted under RATING_WEBHOOK_SECRET_KEYS
(`rating_service.core.encryption`) and shown once, when the endpoint is added.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

import httpx

from rating_service.core.encryption import EncryptionKeys
from rating_service.core.errors import FailedPrecondition, InvalidArgument, NotFound
from rating_service.core.ids import new_id
from rating_service.outbox.topics import NOTIFICATION_TOPICS
from rating_service.settings import Settings, env_name
from rating_service.store.webhook import DeliveryAttempt, WebhookEndpoint, WebhookStore

SIGNATURE_HEADER = "Rating-Signature"
EVENT_ID_HEADER = "Rating-Event-Id"
TOPIC_HEADER = "Rating-Topic"

SIGNATURE_TOLERANCE_SECONDS = 300.0
"""How far a signature's timestamp may be from the receiver's clock (either way) by default."""

_ERROR_EXCERPT = 300
"""Characters of an error (or of a refusing endpoint's answer) kept in the delivery log."""


@dataclass(frozen=True)
class NotificationEvent:
    """One notification: an outbox row as the endpoints see it (`created_at` ISO-8601)."""

    event_id: str
    tenant_id: str
    topic: str
    created_at: str
    data: dict[str, Any]

    def body(self) -> bytes:
        """The JSON body POSTed to every endpoint, byte for byte the same on every attempt."""
        envelope = {
            "id": self.event_id,
            "topic": self.topic,
            "tenant_id": self.tenant_id,
            "created_at": self.created_at,
            "data": self.data,
        }
        return json.dumps(envelope, separators=(",", ":"), sort_keys=True).encode()


class InvalidSignature(ValueError):
    """A delivery's signature header is malformed, does not match its body, or is stale."""


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The hex HMAC-SHA256 of `f"{timestamp}.{body}"` under the endpoint's secret."""
    message = f"{timestamp}.".encode() + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def signature_header(secret: str, timestamp: int, body: bytes) -> str:
    """The `Rating-Signature` header value: `t=<unix seconds>,v1=<hex signature>`."""
    return f"t={timestamp},v1={sign(secret, timestamp, body)}"


def verify_signature(
    secret: str,
    header: str,
    body: bytes | str,
    *,
    tolerance_seconds: float = SIGNATURE_TOLERANCE_SECONDS,
    now: float | None = None,
) -> int:
    """Check a delivery's `Rating-Signature` against its raw body; its timestamp, or raise.

    For receivers: pass the endpoint's secret, the header and the request body exactly as
    received (not re-serialized JSON). Raises InvalidSignature when the header is malformed,
    no `v1` signature matches (several are accepted, one per secret, for rotation), or the
    timestamp is more than `tolerance_seconds` from `now` (default: this machine's clock).
    """
    raw = body.encode() if isinstance(body, str) else body
    timestamp, signatures = _parse_header(header)
    expected = sign(secret, timestamp, raw)
    if not any(hmac.compare_digest(expected, candidate) for candidate in signatures):
        raise InvalidSignature("the signature does not match the body")
    age = (time.time() if now is None else now) - timestamp
    if abs(age) > tolerance_seconds:
        raise InvalidSignature(
            f"the signature's timestamp is {age:.0f} s from now (tolerance {tolerance_seconds} s)"
        )
    return timestamp


def _parse_header(header: str) -> tuple[int, list[str]]:
    timestamps: list[str] = []
    signatures: list[str] = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t":
            timestamps.append(value)
        elif key == "v1":
            signatures.append(value)
    if len(timestamps) != 1 or not timestamps[0].isdigit() or not signatures:
        raise InvalidSignature(f"malformed {SIGNATURE_HEADER} header: expected t=<unix>,v1=<hex>")
    return int(timestamps[0]), signatures


class DeliveryOutcome(StrEnum):
    """What one call to `Webhooks.deliver` ended in."""

    DELIVERED = "delivered"
    ALREADY_DELIVERED = "already_delivered"
    """An earlier attempt (or run) delivered it: not sent again."""
    ENDPOINT_DISABLED = "endpoint_disabled"
    """Disabled since the notification was raised: not sent."""
    FAILED = "failed"
    """Not a 2xx answer, or no answer: logged, to be retried."""


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    """An attempt's outcome, with the endpoint's status code or the error."""

    outcome: DeliveryOutcome
    status_code: int | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class NewEndpoint:
    """An endpoint just added, and its signing secret: shown this once, never listed."""

    endpoint: WebhookEndpoint
    secret: str


def webhook_secret_keys(settings: Settings) -> EncryptionKeys:
    """The keys that seal and open endpoints' signing secrets, as configured."""
    source = env_name("webhook_secret_keys")
    return EncryptionKeys.parse(settings.webhook_secret_keys, source)


class Webhooks:
    """Tenants' webhook endpoints, and sending notifications to them with every attempt logged."""

    def __init__(
        self,
        store: WebhookStore,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._keys = store.keys
        self._transport = transport
        self._clock = clock

    async def add_endpoint(
        self, tenant_id: str, url: str, topics: Sequence[str], actor: str
    ) -> NewEndpoint:
        """Add an endpoint for some topics (none: every topic), with a new signing secret."""
        _check_url(url)
        unknown = sorted(set(topics) - set(NOTIFICATION_TOPICS))
        if unknown:
            raise InvalidArgument.of_field(
                "topics", f"unknown {unknown}; the topics are {', '.join(NOTIFICATION_TOPICS)}"
            )
        secret = "whsec_" + secrets.token_urlsafe(32)
        endpoint = await self._store.add_endpoint(
            tenant_id,
            new_id("whe"),
            url,
            tuple(dict.fromkeys(topics)) or None,
            secret,
            actor,
        )
        return NewEndpoint(endpoint, secret)

    async def endpoints(self, tenant_id: str) -> list[WebhookEndpoint]:
        """The tenant's endpoints, enabled and disabled."""
        return await self._store.endpoints(tenant_id)

    async def disable_endpoint(
        self, tenant_id: str, endpoint_id: str, actor: str
    ) -> WebhookEndpoint:
        """Stop sending to an endpoint; its delivery log is kept."""
        return await self._store.disable_endpoint(tenant_id, endpoint_id, actor)

    async def check_keys(self) -> None:
        """Refuse, saying what to set, unless every stored secret's key is configured.

        The worker calls this at start: a key dropped too soon (or never set) is found then,
        not at the first delivery, which would only fail and retry.
        """
        missing = {
            key_id: count
            for key_id, count in (await self._store.secrets_per_key()).items()
            if key_id not in self._keys.ids
        }
        if not missing:
            return
        described = ", ".join(f"{count} under key {key_id!r}" for key_id, count in missing.items())
        configured = ", ".join(map(repr, self._keys.ids)) or "none"
        raise FailedPrecondition(
            f"webhook signing secrets are stored encrypted ({described}), but"
            f" {self._keys.source} holds no such key (configured: {configured}): set it to"
            " `id:key,…` with every key that sealed them, the newest first",
            reason="ENCRYPTION_KEY_MISSING",
        )

    async def secrets_per_key(self) -> dict[str, int]:
        """How many endpoints' secrets each key id sealed (every tenant's)."""
        return await self._store.secrets_per_key()

    async def reseal_secrets(self) -> dict[str, int]:
        """Re-encrypt every secret under the current (first) key; how many moved, per old key."""
        return await self._store.reseal_secrets()

    async def raised(self, tenant_id: str, event_id: str) -> NotificationEvent:
        """A notification the tenant's outbox raised, as its endpoints were sent it."""
        found = await self._store.raised(tenant_id, event_id)
        if found is None or found.topic not in NOTIFICATION_TOPICS:
            raise NotFound(
                f"no notification {event_id!r}: `ListWebhookDeliveries` names them",
                reason="NOTIFICATION_NOT_FOUND",
                metadata={"event_id": event_id},
            )
        return NotificationEvent(
            event_id, tenant_id, found.topic, found.created_at.isoformat(), found.data
        )

    async def endpoint(self, tenant_id: str, endpoint_id: str) -> WebhookEndpoint:
        """One of the tenant's endpoints (NotFound for another tenant's)."""
        for endpoint in await self._store.endpoints(tenant_id):
            if endpoint.endpoint_id == endpoint_id:
                return endpoint
        raise NotFound(
            f"no webhook endpoint {endpoint_id!r}",
            reason="WEBHOOK_ENDPOINT_NOT_FOUND",
            metadata={"endpoint_id": endpoint_id},
        )

    async def subscribers(self, tenant_id: str, topic: str) -> list[str]:
        """The ids of the tenant's enabled endpoints that take notifications of `topic`."""
        return await self._store.subscribed_endpoint_ids(tenant_id, topic)

    async def attempts(
        self, tenant_id: str, event_id: str | None = None, limit: int = 100
    ) -> list[DeliveryAttempt]:
        """The delivery log: the tenant's latest attempts (of one event, if given)."""
        return await self._store.attempts(tenant_id, event_id, limit)

    async def deliver(
        self,
        event: NotificationEvent,
        endpoint_id: str,
        attempt: int,
        timeout_seconds: float,
        *,
        again: bool = False,
    ) -> DeliveryResult:
        """POST the signed notification to one endpoint, once, and log the attempt.

        Not sent when the endpoint has been disabled, or has already had it (a retried activity
        or an ops reset of the workflow delivers at most once more than needed, never forever)
        unless it is sent `again` on purpose (a redelivery an operator asked for).
        """
        tenant_id = event.tenant_id
        target = await self._store.delivery_target(tenant_id, endpoint_id)
        if target is None:
            return DeliveryResult(DeliveryOutcome.ENDPOINT_DISABLED)
        if not again and await self._store.was_delivered(tenant_id, event.event_id, endpoint_id):
            return DeliveryResult(DeliveryOutcome.ALREADY_DELIVERED)
        body = event.body()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "rating-service-webhooks/1",
            SIGNATURE_HEADER: signature_header(target.secret, int(self._clock()), body),
            EVENT_ID_HEADER: event.event_id,
            TOPIC_HEADER: event.topic,
        }
        result = await self._post(target.url, headers, body, timeout_seconds)
        await self._store.record_attempt(
            tenant_id,
            DeliveryAttempt(
                endpoint_id,
                event.event_id,
                event.topic,
                attempt,
                result.status_code,
                result.error,
                result.outcome is DeliveryOutcome.DELIVERED,
            ),
        )
        return result

    async def _post(
        self, url: str, headers: Mapping[str, str], body: bytes, timeout_seconds: float
    ) -> DeliveryResult:
        try:
            # A client per attempt: attempts are minutes apart, nothing to keep alive between them.
            async with httpx.AsyncClient(
                timeout=timeout_seconds, transport=self._transport, follow_redirects=False
            ) as http:
                response = await http.post(url, content=body, headers=headers)
        except httpx.TimeoutException:
            return DeliveryResult(
                DeliveryOutcome.FAILED, error=f"no answer within {timeout_seconds} s"
            )
        except httpx.HTTPError as failure:
            described = f"{type(failure).__name__}: {failure}".rstrip(": ")
            return DeliveryResult(DeliveryOutcome.FAILED, error=described[:_ERROR_EXCERPT])
        if response.is_success:
            return DeliveryResult(DeliveryOutcome.DELIVERED, response.status_code)
        # What the endpoint said is what its owner needs to see to fix it.
        answer = response.text[:_ERROR_EXCERPT]
        error = f"HTTP {response.status_code}" + (f": {answer}" if answer else "")
        return DeliveryResult(DeliveryOutcome.FAILED, response.status_code, error)


def _check_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidArgument.of_field("url", f"{url!r} is not an http(s) URL with a host")
