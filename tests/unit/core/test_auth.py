"""Bearer-token parsing, verification and role checks (pure)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from rating_service.core.auth import Caller, Role, issue_key, parse_token, verify
from rating_service.core.errors import PermissionDenied, Unauthenticated
from rating_service.core.ids import new_id

NOW = datetime(2026, 11, 21, tzinfo=UTC)


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (None, "MISSING_API_KEY"),
        ("", "MISSING_API_KEY"),
        ("Bearer", "MALFORMED_API_KEY"),
        ("Bearer key_abc", "MALFORMED_API_KEY"),  # no secret part
        ("Bearer key_abc.", "MALFORMED_API_KEY"),  # empty secret
        ("Bearer abc.secret", "MALFORMED_API_KEY"),  # not a key id
        ("Token key_abc.secret", "MALFORMED_API_KEY"),  # wrong scheme
    ],
)
def test_malformed_headers_are_refused_with_a_reason(header: str | None, reason: str) -> None:
    with pytest.raises(Unauthenticated) as refused:
        parse_token(header)
    assert refused.value.reason == reason


def test_a_token_round_trips_and_verifies_against_its_stored_hash() -> None:
    issued = issue_key("tnt_1", Role.RATER, "svc", NOW)
    assert issued.token.encode() not in issued.key.secret_hash
    key_id, secret = parse_token(f"bearer  {issued.token} ")
    assert key_id == issued.key.key_id
    assert verify(issued.key, secret) == Caller("tnt_1", issued.key.key_id, Role.RATER)


@pytest.mark.parametrize("case", ["unknown", "wrong secret", "revoked"])
def test_verification_fails_the_same_way_whatever_the_cause(case: str) -> None:
    issued = issue_key("tnt_1", Role.ADMIN, "svc", NOW)
    key, secret = issued.key, issued.token.partition(".")[2]
    if case == "unknown":
        key = None  # type: ignore[assignment]
    elif case == "wrong secret":
        secret = secret[::-1]
    else:
        key = type(key)(**{**key.__dict__, "revoked_at": NOW})
    with pytest.raises(Unauthenticated) as refused:
        verify(key, secret)
    assert refused.value.reason == "INVALID_API_KEY"


@pytest.mark.parametrize(
    ("role", "allowed", "ok"),
    [
        (Role.RATER, {Role.RATER}, True),
        (Role.RATER, {Role.ADMIN}, False),
        (Role.OPS, {Role.ADMIN, Role.OPS}, True),
        (Role.ADMIN, {Role.OPS}, False),  # admin is not a superuser of ops actions
    ],
)
def test_roles_are_checked_exactly(role: Role, allowed: set[Role], ok: bool) -> None:
    caller = Caller("tnt_1", "key_1", role)
    if ok:
        caller.require(frozenset(allowed))
    else:
        with pytest.raises(PermissionDenied):
            caller.require(frozenset(allowed))


def test_another_tenants_resource_is_denied() -> None:
    with pytest.raises(PermissionDenied) as refused:
        Caller("tnt_1", "key_1", Role.ADMIN).require_tenant("tnt_2")
    assert refused.value.reason == "CROSS_TENANT_ACCESS"


def test_ids_are_prefixed_unique_and_sort_by_creation() -> None:
    ids = [new_id("tnt") for _ in range(1000)]
    assert len(set(ids)) == 1000
    assert all(i.startswith("tnt_") and len(i) == 30 for i in ids)
    assert ids[0][:14] <= ids[-1][:14]  # the millisecond prefix never goes backwards
