"""Secrets kept encrypted at rest: AES-256-GCM under named keys, the first of which encrypts.

An operator configures the keys as `id:base64url-key,id:base64url-key,…`. The first key seals
every new secret; every key listed opens what it sealed, so rotating is: put a new key first,
reseal what the older keys sealed, then drop them. Each sealed value records the id of its key.

A sealed value is `version byte ‖ 12-byte random nonce ‖ ciphertext ‖ 16-byte tag`. The caller's
`context` (e.g. the row's primary key) is authenticated with it, so a ciphertext copied onto
another row does not open there.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from rating_service.core.errors import FailedPrecondition

KEY_BYTES = 32
"""AES-256."""

_NONCE_BYTES = 12
_VERSION = b"\x01"
# A key id is stored beside every ciphertext and written in settings: short and plain.
_KEY_ID = re.compile(r"[A-Za-z0-9_.-]{1,40}")


@dataclass(frozen=True, slots=True)
class Sealed:
    """A secret as stored: the id of the key that sealed it, and the sealed bytes."""

    key_id: str
    ciphertext: bytes


class EncryptionKeys:
    """Named AES-256-GCM keys: the first seals, each opens what it sealed (rotation)."""

    def __init__(self, keys: Sequence[tuple[str, bytes]], source: str = "the encryption keys"):
        ids = [key_id for key_id, _ in keys]
        if len(set(ids)) != len(ids):
            raise ValueError(f"key ids must be unique, got {ids}")
        for key_id, key in keys:
            if not _KEY_ID.fullmatch(key_id):
                raise ValueError(f"key id {key_id!r} must be 1-40 of A-Z a-z 0-9 _ . -")
            if len(key) != KEY_BYTES:
                raise ValueError(f"key {key_id!r} must be {KEY_BYTES} bytes, not {len(key)}")
        self._ciphers = {key_id: AESGCM(key) for key_id, key in keys}
        self._ids = tuple(ids)
        self.source = source
        """Where the keys come from, named in errors (e.g. the environment variable)."""

    @classmethod
    def parse(cls, text: str, source: str = "the encryption keys") -> EncryptionKeys:
        """Keys from `id:base64url-key,…` (first one current); empty text means no keys."""
        keys: list[tuple[str, bytes]] = []
        items = [part.strip() for part in text.split(",") if part.strip()]
        for position, item in enumerate(items):
            key_id, colon, encoded = item.partition(":")
            if not colon:
                # Likely a bare key: say which item, never what it holds.
                raise ValueError(f"expected id:base64-key, item {position + 1} has no ':'")
            try:
                padded = encoded.encode() + b"=" * (-len(encoded) % 4)
                key = base64.b64decode(padded, altchars=b"-_", validate=True)
            except (binascii.Error, ValueError) as exc:
                # The message names the key's id only: never echo key material.
                raise ValueError(f"key {key_id!r} is not base64url") from exc
            keys.append((key_id, key))
        return cls(keys, source)

    @property
    def ids(self) -> tuple[str, ...]:
        """The key ids, current first."""
        return self._ids

    @property
    def current_id(self) -> str | None:
        """The id of the key that seals new secrets; None when there are no keys."""
        return self._ids[0] if self._ids else None

    def require_current_id(self) -> str:
        """The id of the key that seals new secrets; refused, saying what to set, if none."""
        if self.current_id is None:
            raise self._missing("no key is configured to encrypt secrets with")
        return self.current_id

    def seal(self, plaintext: str, context: bytes) -> Sealed:
        """Encrypt under the current key, binding `context`; refused when there are no keys."""
        key_id = self.require_current_id()
        nonce = secrets.token_bytes(_NONCE_BYTES)
        sealed = self._ciphers[key_id].encrypt(nonce, plaintext.encode(), context)
        return Sealed(key_id, _VERSION + nonce + sealed)

    def open(self, sealed: Sealed, context: bytes) -> str:
        """Decrypt with the key it names; refused if that key is not listed or it was altered."""
        cipher = self._ciphers.get(sealed.key_id)
        if cipher is None:
            raise self._missing(f"the key {sealed.key_id!r} that sealed a secret is not listed")
        version, nonce = sealed.ciphertext[:1], sealed.ciphertext[1 : 1 + _NONCE_BYTES]
        if version != _VERSION:
            raise ValueError(f"unknown sealed-secret format {version!r}")
        try:
            plaintext = cipher.decrypt(nonce, sealed.ciphertext[1 + _NONCE_BYTES :], context)
        except InvalidTag as exc:
            raise ValueError(
                f"a secret sealed under {sealed.key_id!r} does not open: wrong key or altered"
            ) from exc
        return plaintext.decode()

    def reseal(self, sealed: Sealed, context: bytes) -> Sealed:
        """The same secret sealed under the current key (unchanged if it already is)."""
        if sealed.key_id == self.current_id:
            return sealed
        return self.seal(self.open(sealed, context), context)

    def _missing(self, what: str) -> FailedPrecondition:
        return FailedPrecondition(
            f"{what}: set {self.source} to `id:key,…` (first key encrypts, every key decrypts)",
            reason="ENCRYPTION_KEY_MISSING",
        )


def new_key(key_id: str) -> str:
    """A fresh random key in the `id:base64url-key` form the settings take."""
    if not _KEY_ID.fullmatch(key_id):
        raise ValueError(f"key id {key_id!r} must be 1-40 of A-Z a-z 0-9 _ . -")
    encoded = base64.urlsafe_b64encode(secrets.token_bytes(KEY_BYTES)).decode().rstrip("=")
    return f"{key_id}:{encoded}"
