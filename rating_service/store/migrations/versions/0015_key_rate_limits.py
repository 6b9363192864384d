"""An API key's own rate limit on the events it sends.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-03

`api_keys.rate_limit` holds the limit's dict form (`rating_service.core.contracts.rate_limits`),
or NULL for a key without one (every key issued before).
"""

from __future__ import annotations

import importlib

from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

_statements = importlib.import_module(
    "rating_service.store.migrations.versions.0003_contracts_and_ledger"
).sql_statements

UPGRADE = """
ALTER TABLE api_keys ADD COLUMN rate_limit jsonb;
"""

DOWNGRADE = """
ALTER TABLE api_keys DROP COLUMN rate_limit;
"""


def upgrade() -> None:
    """Add the column."""
    for statement in _statements(UPGRADE):
        op.execute(statement)


def downgrade() -> None:
    """Drop it."""
    for statement in _statements(DOWNGRADE):
        op.execute(statement)
