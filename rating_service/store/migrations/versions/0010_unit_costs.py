"""What rated usage cost us: a cost per rated event and per period counter, for margins.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03

Each rated event records its cost (the product's unit cost then, times the quantity it
counted), and each period counter adds them up beside its amount, so a margin report reads
counters, never events. Rows written before this revision cost 0: their unit costs were
never known.
"""

from __future__ import annotations

import importlib

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

_statements = importlib.import_module(
    "rating_service.store.migrations.versions.0003_contracts_and_ledger"
).sql_statements

UPGRADE = """
ALTER TABLE usage_counters ADD COLUMN cost numeric NOT NULL DEFAULT 0;
ALTER TABLE rated_events ADD COLUMN cost numeric NOT NULL DEFAULT 0;
"""

DOWNGRADE = """
ALTER TABLE rated_events DROP COLUMN cost;
ALTER TABLE usage_counters DROP COLUMN cost;
"""


def upgrade() -> None:
    """Add the cost columns."""
    for statement in _statements(UPGRADE):
        op.execute(statement)


def downgrade() -> None:
    """Drop them."""
    for statement in _statements(DOWNGRADE):
        op.execute(statement)
