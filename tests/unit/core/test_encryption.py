"""Secrets sealed at rest: round trip, rotation by key id, and every way opening is refused."""

from __future__ import annotations

import base64

import pytest

from rating_service.core.encryption import KEY_BYTES, EncryptionKeys, Sealed, new_key
from rating_service.core.errors import FailedPrecondition

OLD = new_key("2025")
NEW = new_key("2026")
ROW = b"webhook_endpoints/whe_1"


def test_a_sealed_secret_opens_to_itself_and_never_holds_the_plaintext() -> None:
    keys = EncryptionKeys.parse(NEW)
    sealed = keys.seal("whsec_abc", ROW)
    assert sealed.key_id == "2026"
    assert b"whsec_abc" not in sealed.ciphertext
    assert keys.open(sealed, ROW) == "whsec_abc"
    # A fresh nonce each time: the same secret never seals to the same bytes.
    assert keys.seal("whsec_abc", ROW).ciphertext != sealed.ciphertext


def test_rotation_new_key_first_old_key_still_opens_and_reseal_moves_to_the_new_key() -> None:
    sealed_before = EncryptionKeys.parse(OLD).seal("whsec_old", ROW)
    rotating = EncryptionKeys.parse(f"{NEW},{OLD}")
    assert rotating.ids == ("2026", "2025")
    assert rotating.open(sealed_before, ROW) == "whsec_old"
    assert rotating.seal("whsec_new", ROW).key_id == "2026"

    resealed = rotating.reseal(sealed_before, ROW)
    assert resealed.key_id == "2026"
    assert rotating.reseal(resealed, ROW) is resealed  # already current: untouched
    # Once every row is resealed the old key can go.
    assert EncryptionKeys.parse(NEW).open(resealed, ROW) == "whsec_old"
    with pytest.raises(FailedPrecondition) as dropped_too_soon:
        EncryptionKeys.parse(NEW, "RATING_X").open(sealed_before, ROW)
    assert dropped_too_soon.value.reason == "ENCRYPTION_KEY_MISSING"
    said = dropped_too_soon.value.message
    assert "'2025'" in said and "RATING_X" in said


def _flip_last_byte(sealed: Sealed) -> Sealed:
    return Sealed(sealed.key_id, sealed.ciphertext[:-1] + bytes([sealed.ciphertext[-1] ^ 1]))


@pytest.mark.parametrize(
    ("case", "opened_as"),
    [
        ("another row's context", lambda s: (s, b"webhook_endpoints/whe_2")),
        ("an altered ciphertext", lambda s: (_flip_last_byte(s), ROW)),
        ("another key under the same id", None),
    ],
)
def test_a_secret_does_not_open_elsewhere_or_altered(case: str, opened_as: object) -> None:
    keys = EncryptionKeys.parse(NEW)
    sealed = keys.seal("whsec_abc", ROW)
    if opened_as is None:
        keys, context = EncryptionKeys.parse(new_key("2026")), ROW
    else:
        sealed, context = opened_as(sealed)  # type: ignore[operator]
    with pytest.raises(ValueError, match="does not open"):
        keys.open(sealed, context)


def test_without_keys_sealing_is_refused_with_what_to_set() -> None:
    with pytest.raises(FailedPrecondition) as refused:
        EncryptionKeys.parse("", "RATING_WEBHOOK_SECRET_KEYS").seal("whsec_abc", ROW)
    assert "set RATING_WEBHOOK_SECRET_KEYS" in refused.value.message


KEY = base64.urlsafe_b64encode(b"k" * KEY_BYTES).decode()


@pytest.mark.parametrize(
    ("text", "refused"),
    [
        (f"k1{KEY}", "item 1 has no .:."),
        ("k1:!!not-base64!!", "not base64url"),
        (f"k1:{base64.urlsafe_b64encode(b'short').decode()}", "must be 32 bytes, not 5"),
        (f"k1:{KEY},k1:{KEY}", "must be unique"),
        (f"k 1:{KEY}", "key id 'k 1'"),
    ],
)
def test_malformed_keys_are_refused_without_echoing_key_material(text: str, refused: str) -> None:
    with pytest.raises(ValueError, match=refused) as error:
        EncryptionKeys.parse(text)
    assert KEY not in str(error.value)


def test_new_keys_parse_and_differ() -> None:
    assert EncryptionKeys.parse(f" {new_key('a')} , {new_key('b')} ,").ids == ("a", "b")
    assert new_key("a") != new_key("a")
    assert EncryptionKeys.parse("").current_id is None
