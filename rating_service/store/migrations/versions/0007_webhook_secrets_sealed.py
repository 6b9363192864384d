"""Webhook signing secrets sealed at rest: the plaintext `secret` becomes ciphertext + key id.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-28

The keys come from `migrations.upgrade(…, webhook_secret_keys=…)` (`rating db upgrade` passes
RATING_WEBHOOK_SECRET_KEYS). With endpoints in the table and no key, the upgrade is refused and
changes nothing: it runs in the migration's transaction.
"""

from __future__ import annotations

from alembic import context, op
from sqlalchemy import text

from rating_service.core.encryption import EncryptionKeys, Sealed
from rating_service.core.errors import FailedPrecondition
from rating_service.store.webhook import secret_context

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

KEYS_ATTRIBUTE = "webhook_secret_keys"
"""The alembic config attribute that carries the EncryptionKeys."""


def _keys(endpoints: int) -> EncryptionKeys:
    keys = context.config.attributes.get(KEYS_ATTRIBUTE)
    if isinstance(keys, EncryptionKeys) and keys.current_id is not None:
        return keys
    raise FailedPrecondition(
        f"{endpoints} webhook endpoint(s) have signing secrets this migration (0007) must"
        " encrypt or decrypt, and RATING_WEBHOOK_SECRET_KEYS is not set: create a key with"
        " `rating webhooks new-key`, set RATING_WEBHOOK_SECRET_KEYS to it, and run"
        " `rating db upgrade` again (nothing was changed)",
        reason="ENCRYPTION_KEY_MISSING",
    )


def upgrade() -> None:
    """Seal every endpoint's secret under the current key; drop the plaintext column."""
    op.execute(
        "ALTER TABLE webhook_endpoints ADD COLUMN secret_ciphertext bytea,"
        " ADD COLUMN secret_key_id text, ALTER COLUMN secret DROP NOT NULL"
    )
    conn = op.get_bind()
    rows = conn.execute(
        text("SELECT endpoint_id, secret FROM webhook_endpoints ORDER BY endpoint_id")
    ).all()
    keys = _keys(len(rows)) if rows else None
    for endpoint_id, secret in rows:
        assert keys is not None
        sealed = keys.seal(secret, secret_context(endpoint_id))
        # NULL the plaintext in the live row too: DROP COLUMN only hides it, it does not erase.
        conn.execute(
            text(
                "UPDATE webhook_endpoints SET secret_ciphertext = :ciphertext,"
                " secret_key_id = :key_id, secret = NULL WHERE endpoint_id = :endpoint_id"
            ),
            {"ciphertext": sealed.ciphertext, "key_id": sealed.key_id, "endpoint_id": endpoint_id},
        )
    op.execute(
        "ALTER TABLE webhook_endpoints ALTER COLUMN secret_ciphertext SET NOT NULL,"
        " ALTER COLUMN secret_key_id SET NOT NULL, DROP COLUMN secret"
    )


def downgrade() -> None:
    """Open every sealed secret back into the plaintext column (needs the keys that sealed them)."""
    op.execute("ALTER TABLE webhook_endpoints ADD COLUMN secret text")
    conn = op.get_bind()
    rows = conn.execute(
        text(
            "SELECT endpoint_id, secret_ciphertext, secret_key_id FROM webhook_endpoints"
            " ORDER BY endpoint_id"
        )
    ).all()
    keys = _keys(len(rows)) if rows else None
    for endpoint_id, ciphertext, key_id in rows:
        assert keys is not None
        secret = keys.open(Sealed(key_id, bytes(ciphertext)), secret_context(endpoint_id))
        conn.execute(
            text("UPDATE webhook_endpoints SET secret = :secret WHERE endpoint_id = :endpoint_id"),
            {"secret": secret, "endpoint_id": endpoint_id},
        )
    op.execute(
        "ALTER TABLE webhook_endpoints ALTER COLUMN secret SET NOT NULL,"
        " DROP COLUMN secret_ciphertext, DROP COLUMN secret_key_id"
    )
