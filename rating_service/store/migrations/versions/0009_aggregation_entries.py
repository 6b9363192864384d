"""What meters that aggregate beyond sum and count remember, beside the period's usage counter.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03

A `unique_count` meter remembers each distinct value counted in a period; `latest` and
`time_weighted_sum` meters remember each reading by its time (docs/catalog.md, "Meters").
Rows are written in the debit's transaction, under the billing period's row lock, as the
usage counters are.
"""

from __future__ import annotations

import importlib

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_statements = importlib.import_module(
    "rating_service.store.migrations.versions.0003_contracts_and_ledger"
).sql_statements

UPGRADE = """
-- One row per remembered entry of a counter: a distinct value (value 1), or a reading whose
-- key is its UTC time as fixed-width text, so that text order is time order.
CREATE TABLE aggregation_entries (
    tenant_id     text NOT NULL,
    contract_id   text NOT NULL,
    period_start  timestamptz NOT NULL,
    product_key   text NOT NULL,
    cell          text[] NOT NULL,
    entry_key     text COLLATE "C" NOT NULL,  -- byte order: the order Python compares keys in
    value         numeric NOT NULL,
    CONSTRAINT pk_aggregation_entries PRIMARY KEY
        (tenant_id, contract_id, period_start, product_key, cell, entry_key),
    CONSTRAINT fk_aggregation_entries_contract FOREIGN KEY (tenant_id, contract_id)
        REFERENCES contracts (tenant_id, contract_id)
);
"""

DOWNGRADE = """
DROP TABLE aggregation_entries;
"""


def upgrade() -> None:
    """Create the aggregation entries table."""
    for statement in _statements(UPGRADE):
        op.execute(statement)


def downgrade() -> None:
    """Drop it (and what it remembered)."""
    for statement in _statements(DOWNGRADE):
        op.execute(statement)
