"""Portal tokens: what a link grants, and every way a link stops working."""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from rating_service.core.auth import KEY_ROLES, Role, issue_key, verify
from rating_service.core.errors import InvalidArgument, Unauthenticated
from rating_service.core.portal import (
    MAX_LINK_SECONDS,
    PORTAL_LINK_EXPIRED,
    PORTAL_LINK_INVALID,
    PortalGrant,
    grant_portal,
    new_portal_secret,
    sign_portal_token,
    verify_portal_token,
)

SECRET = "s" * 32
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def token_for(customer_id: str = "cust-a", lifetime: timedelta = timedelta(minutes=15)) -> str:
    return sign_portal_token(SECRET, grant_portal("tnt_1", customer_id, NOW, lifetime))


def refusal(secret: str, token: str, now: datetime = NOW) -> str:
    with pytest.raises(Unauthenticated) as refused:
        verify_portal_token(secret, token, now)
    return refused.value.reason


def test_a_link_proves_its_tenant_customer_and_expiry() -> None:
    grant = verify_portal_token(SECRET, token_for(), NOW + timedelta(minutes=14, seconds=59))
    assert (grant.tenant_id, grant.customer_id) == ("tnt_1", "cust-a")
    assert grant.expires_at == NOW + timedelta(minutes=15)


@pytest.mark.parametrize(
    ("later", "reason"),
    [
        (timedelta(minutes=15) - timedelta(seconds=1), None),  # the last second it works
        (timedelta(minutes=15), PORTAL_LINK_EXPIRED),  # at expiry: gone
        (timedelta(days=1), PORTAL_LINK_EXPIRED),
    ],
)
def test_a_link_works_until_its_expiry_and_not_at_it(later: timedelta, reason: str | None) -> None:
    if reason is None:
        verify_portal_token(SECRET, token_for(), NOW + later)
    else:
        assert refusal(SECRET, token_for(), NOW + later) == reason


def _reencoded(token: str, **changes: object) -> str:
    version, payload, signature = token.split(".")
    fields = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    fields.update(changes)
    body = base64.urlsafe_b64encode(json.dumps(fields).encode()).rstrip(b"=").decode()
    return f"{version}.{body}.{signature}"


@pytest.mark.parametrize(
    "tamper",
    [
        lambda t: _reencoded(t, c="cust-b"),  # another customer
        lambda t: _reencoded(t, t="tnt_2"),  # another tenant
        lambda t: _reencoded(t, e=4102444800),  # a later expiry
        lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"),  # one character of the signature
        lambda t: "pt2" + t[3:],  # another version
        lambda t: t.rsplit(".", 1)[0],  # no signature
        lambda t: t + ".extra",
        lambda t: "",
        lambda t: "pt1.!!!.???",
    ],
)
def test_any_change_to_a_link_makes_it_invalid(tamper: object) -> None:
    assert callable(tamper)
    assert refusal(SECRET, tamper(token_for())) == PORTAL_LINK_INVALID


def test_a_link_signed_with_another_secret_is_invalid() -> None:
    assert refusal("t" * 32, token_for()) == PORTAL_LINK_INVALID


def test_two_links_for_the_same_customer_and_moment_differ() -> None:
    assert token_for() != token_for()


@pytest.mark.parametrize("seconds", [0, -1, MAX_LINK_SECONDS + 1])
def test_a_link_lives_between_a_second_and_a_day(seconds: int) -> None:
    with pytest.raises(InvalidArgument):
        grant_portal("tnt_1", "cust-a", NOW, timedelta(seconds=seconds))
    grant_portal("tnt_1", "cust-a", NOW, timedelta(seconds=MAX_LINK_SECONDS))


def test_a_short_secret_is_refused() -> None:
    grant = PortalGrant("tnt_1", "cust-a", NOW, "n")
    with pytest.raises(ValueError):
        sign_portal_token("short", grant)
    assert len(new_portal_secret()) >= 32


def test_no_api_key_has_the_portal_role() -> None:
    assert Role.PORTAL not in KEY_ROLES
    with pytest.raises(InvalidArgument):
        issue_key("tnt_1", Role.PORTAL, "sneaky", NOW)


def test_a_stored_key_with_the_portal_role_does_not_authenticate() -> None:
    issued = issue_key("tnt_1", Role.OPS, "ops", NOW)
    forged = replace(issued.key, role=Role.PORTAL)  # e.g. a row edited by hand
    secret = issued.token.partition(".")[2]
    verify(issued.key, secret)
    with pytest.raises(Unauthenticated):
        verify(forged, secret)
