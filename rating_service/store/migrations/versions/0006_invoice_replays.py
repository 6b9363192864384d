"""Ops replays of failed invoice workflows, and payment attempts the gateway refused.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-21
"""

from __future__ import annotations

import importlib

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_statements = importlib.import_module(
    "rating_service.store.migrations.versions.0003_contracts_and_ledger"
).sql_statements

UPGRADE = """
-- Every replay of an invoice workflow: who asked, why, when, what it replayed, how it ended.
CREATE TABLE invoice_replays (
    replay_id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id     text NOT NULL REFERENCES tenants (tenant_id),
    workflow_id   text NOT NULL,
    contract_id   text NOT NULL,
    billing_date  text NOT NULL,
    replayed_run  text NOT NULL,
    failed_step   text NOT NULL,
    error         text NOT NULL,
    mode          text NOT NULL CHECK (mode IN ('rerun', 'reset')),
    reset_to      text,
    new_run       text,
    actor         text NOT NULL,
    reason        text NOT NULL CHECK (reason <> ''),
    requested_at  timestamptz NOT NULL DEFAULT now(),
    outcome       text NOT NULL
                  CHECK (outcome IN ('running', 'completed', 'failed', 'refused')),
    detail        text NOT NULL DEFAULT '',
    finished_at   timestamptz
);
CREATE INDEX ix_invoice_replays_workflow ON invoice_replays (tenant_id, workflow_id);
CREATE INDEX ix_invoice_replays_requested ON invoice_replays (tenant_id, requested_at);

-- A gateway may refuse an attempt outright (an unknown payment method): nothing was charged,
-- and the attempt is made again under its key once the method is fixed.
ALTER TABLE payment_attempts DROP CONSTRAINT payment_attempts_status_check;
ALTER TABLE payment_attempts ADD CONSTRAINT payment_attempts_status_check
    CHECK (status IN ('pending', 'succeeded', 'failed', 'refused'));
"""

DOWNGRADE = """
ALTER TABLE payment_attempts DROP CONSTRAINT payment_attempts_status_check;
ALTER TABLE payment_attempts ADD CONSTRAINT payment_attempts_status_check
    CHECK (status IN ('pending', 'succeeded', 'failed'));
DROP TABLE invoice_replays;
"""


def upgrade() -> None:
    """Create the replay log; let payment attempts be refused."""
    for statement in _statements(UPGRADE):
        op.execute(statement)


def downgrade() -> None:
    """Drop the replay log."""
    for statement in _statements(DOWNGRADE):
        op.execute(statement)
