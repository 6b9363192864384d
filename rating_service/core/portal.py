"""Portal links: a short-lived, signed grant to see one customer's account, and nothing more.

A portal token is `pt1.<payload>.<signature>`: the payload (base64url JSON) names the tenant, the
customer and the expiry; the signature is HMAC-SHA256 of `pt1.<payload>` under the server's
portal secret. Whoever holds the token may read that customer's account until it expires, the
way a Stripe customer-portal link works; it is a bearer credential, so it is short-lived, and a
changed byte anywhere makes it worthless. Nothing is stored: the server verifies, it never looks up.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from rating_service.core.errors import InvalidArgument, Unauthenticated

TOKEN_VERSION = "pt1"

PORTAL_LINK_INVALID = "PORTAL_LINK_INVALID"
"""The token is malformed or its signature does not match (tampered, or another secret)."""

PORTAL_LINK_EXPIRED = "PORTAL_LINK_EXPIRED"
"""The token was genuine but its time is up: ask for a new link."""

MIN_SECRET_BYTES = 32
MAX_LINK_SECONDS = 24 * 3600
"""The longest a link may live: a portal link is for a visit, not a standing credential."""


@dataclass(frozen=True, slots=True)
class PortalGrant:
    """What a portal token proves: this tenant's customer may be read until `expires_at`."""

    tenant_id: str
    customer_id: str
    expires_at: datetime
    nonce: str
    """Random per link, so two links for the same customer and second are not one token."""


def new_portal_secret() -> str:
    """A fresh secret to sign portal links with (256 random bits, URL-safe)."""
    return secrets.token_urlsafe(32)


def grant_portal(
    tenant_id: str, customer_id: str, now: datetime, lifetime: timedelta
) -> PortalGrant:
    """A grant for `lifetime` from `now`, refused if the lifetime is not in (0, 24 h]."""
    if lifetime <= timedelta(0) or lifetime > timedelta(seconds=MAX_LINK_SECONDS):
        raise InvalidArgument.of_field(
            "ttl_seconds", f"a portal link lives between 1 second and {MAX_LINK_SECONDS} seconds"
        )
    return PortalGrant(tenant_id, customer_id, now + lifetime, secrets.token_urlsafe(9))


def sign_portal_token(secret: str, grant: PortalGrant) -> str:
    """The bearer token for a grant."""
    _check_secret(secret)
    payload = json.dumps(
        {
            "t": grant.tenant_id,
            "c": grant.customer_id,
            "e": int(grant.expires_at.timestamp()),
            "n": grant.nonce,
        },
        separators=(",", ":"),
        sort_keys=True,
    ).encode()
    signed = f"{TOKEN_VERSION}.{_b64(payload)}"
    return f"{signed}.{_b64(_mac(secret, signed))}"


def verify_portal_token(secret: str, token: str, now: datetime) -> PortalGrant:
    """The grant a token proves, or Unauthenticated: invalid (any tampering) or expired."""
    _check_secret(secret)
    version, _, rest = token.partition(".")
    payload_part, _, signature_part = rest.partition(".")
    if version != TOKEN_VERSION or not payload_part or not signature_part:
        raise _invalid()
    try:
        signature = _unb64(signature_part)
    except (binascii.Error, ValueError):
        raise _invalid() from None
    # The signature is checked before the payload is even parsed: nothing forged is read.
    if not hmac.compare_digest(signature, _mac(secret, f"{version}.{payload_part}")):
        raise _invalid()
    try:
        fields = json.loads(_unb64(payload_part))
        grant = PortalGrant(
            tenant_id=str(fields["t"]),
            customer_id=str(fields["c"]),
            expires_at=datetime.fromtimestamp(int(fields["e"]), UTC),
            nonce=str(fields["n"]),
        )
    except (binascii.Error, ValueError, KeyError, TypeError):
        raise _invalid() from None
    if now >= grant.expires_at:
        raise Unauthenticated(
            "the portal link has expired: ask for a new one",
            reason=PORTAL_LINK_EXPIRED,
            metadata={"expired_at": grant.expires_at.isoformat()},
        )
    return grant


def _check_secret(secret: str) -> None:
    if len(secret.encode()) < MIN_SECRET_BYTES:
        raise ValueError(f"the portal secret must be at least {MIN_SECRET_BYTES} bytes")


def _mac(secret: str, signed: str) -> bytes:
    return hmac.new(secret.encode(), signed.encode(), hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _invalid() -> Unauthenticated:
    return Unauthenticated(
        "the portal link is not valid: it was changed, or signed by another server",
        reason=PORTAL_LINK_INVALID,
    )
