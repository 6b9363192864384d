"""The webhook signature: a known vector, and what `verify_signature` refuses."""

from __future__ import annotations

import pytest

from rating_service.services.webhook import (
    InvalidSignature,
    NotificationEvent,
    sign,
    signature_header,
    verify_signature,
)

SECRET = "whsec_test"
T = 1_700_000_000
BODY = b'{"id":"evt_1","topic":"alert"}'
# printf '%s' '1700000000.{"id":"evt_1","topic":"alert"}' | openssl dgst -sha256 -hmac whsec_test
KNOWN = "f0c2998e39c1543b185fb404ffd8f610d254e3dad5f553ee8b12a5c3fdf6aeae"


def test_the_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    assert sign(SECRET, T, BODY) == KNOWN
    assert signature_header(SECRET, T, BODY) == f"t={T},v1={KNOWN}"


def test_a_genuine_delivery_verifies_and_answers_its_timestamp() -> None:
    header = signature_header(SECRET, T, BODY)
    assert verify_signature(SECRET, header, BODY, now=T) == T
    assert verify_signature(SECRET, header, BODY.decode(), now=T) == T  # a str body too


@pytest.mark.parametrize(
    ("case", "header", "body"),
    [
        ("body tampered", f"t={T},v1={KNOWN}", BODY.replace(b"alert", b"alerT")),
        ("timestamp tampered", f"t={T + 1},v1={KNOWN}", BODY),
        ("another secret", signature_header("whsec_other", T, BODY), BODY),
        ("signature truncated", f"t={T},v1={KNOWN[:-2]}", BODY),
        ("no signature", f"t={T}", BODY),
        ("no timestamp", f"v1={KNOWN}", BODY),
        ("two timestamps", f"t={T},t={T},v1={KNOWN}", BODY),
        ("timestamp not a number", f"t=soon,v1={KNOWN}", BODY),
        ("empty header", "", BODY),
    ],
)
def test_a_forged_or_malformed_delivery_is_refused(case: str, header: str, body: bytes) -> None:
    # A tampered timestamp is checked against "now" = the forged one: the signature alone fails.
    forged_now = T + 1 if case == "timestamp tampered" else T
    with pytest.raises(InvalidSignature):
        verify_signature(SECRET, header, body, now=forged_now)


@pytest.mark.parametrize(
    ("age", "accepted"),
    [
        (0, True),
        (300, True),  # at the 300 s tolerance: still fresh
        (301, False),  # a replay of a captured request, 5 min later
        (-300, True),  # the sender's clock 300 s ahead
        (-301, False),
    ],
)
def test_the_timestamp_must_be_within_the_tolerance_window(age: int, accepted: bool) -> None:
    header = signature_header(SECRET, T, BODY)
    if accepted:
        assert verify_signature(SECRET, header, BODY, now=T + age) == T
    else:
        with pytest.raises(InvalidSignature, match="tolerance"):
            verify_signature(SECRET, header, BODY, now=T + age)


def test_the_tolerance_is_the_receivers_choice() -> None:
    header = signature_header(SECRET, T, BODY)
    assert verify_signature(SECRET, header, BODY, now=T + 3600, tolerance_seconds=3600) == T
    with pytest.raises(InvalidSignature):
        verify_signature(SECRET, header, BODY, now=T + 10, tolerance_seconds=5)


def test_any_matching_v1_signature_verifies_so_secrets_can_rotate() -> None:
    old, new = sign("whsec_old", T, BODY), sign("whsec_new", T, BODY)
    header = f"t={T},v1={old},v1={new}"
    assert verify_signature("whsec_new", header, BODY, now=T) == T
    assert verify_signature("whsec_old", header, BODY, now=T) == T


def test_the_body_is_the_documented_envelope_in_one_canonical_form() -> None:
    event = NotificationEvent(
        "alert:tnt_1:e1:0",
        "tnt_1",
        "alert",
        "2026-01-01T00:00:00+00:00",
        {"kind": "balance_below", "contract_id": "ctr_1"},
    )
    assert event.body() == (
        b'{"created_at":"2026-01-01T00:00:00+00:00",'
        b'"data":{"contract_id":"ctr_1","kind":"balance_below"},'
        b'"id":"alert:tnt_1:e1:0","tenant_id":"tnt_1","topic":"alert"}'
    )
