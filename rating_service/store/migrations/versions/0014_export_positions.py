"""Rated events in commit order, and where each continuous exporter has got to.

Revision ID: 0014
Revises: 0011
Create Date: 2026-12-03

`rated_events.written_xid` is the id of the transaction that wrote the row. Ordered by it
(then by event id), rows only ever appear *after* a position once every transaction below
the reader's snapshot horizon (`pg_snapshot_xmin`) has ended, so a cursor over
(written_xid, event_id) that stops at the horizon never skips a late commit
(docs: README, "Exporting to a warehouse"). Existing rows get 0: they all precede every
later write. `export_positions` keeps one row per tenant and destination: the committed
position, the number of the next batch, and the batch planned but not yet committed.
"""

from __future__ import annotations

import importlib

from alembic import op

revision = "0014"
down_revision = "0011"
branch_labels = None
depends_on = None

_statements = importlib.import_module(
    "rating_service.store.migrations.versions.0003_contracts_and_ledger"
).sql_statements

UPGRADE = """
-- A constant default first (no table rewrite), then the writer's transaction id for new rows.
ALTER TABLE rated_events ADD COLUMN written_xid bigint NOT NULL DEFAULT 0;
ALTER TABLE rated_events
    ALTER COLUMN written_xid SET DEFAULT (pg_current_xact_id())::text::bigint;
CREATE INDEX ix_rated_events_written ON rated_events (tenant_id, written_xid, event_id);

CREATE TABLE export_positions (
    tenant_id         text NOT NULL,
    destination       text NOT NULL,
    written_xid       bigint NOT NULL DEFAULT 0,
    event_id          text NOT NULL DEFAULT '',
    batch             bigint NOT NULL DEFAULT 1,
    pending_xid       bigint,
    pending_event_id  text,
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT pk_export_positions PRIMARY KEY (tenant_id, destination),
    CONSTRAINT fk_export_positions_tenant_id_tenants FOREIGN KEY (tenant_id)
        REFERENCES tenants (tenant_id),
    CONSTRAINT ck_export_positions_pending
        CHECK ((pending_xid IS NULL) = (pending_event_id IS NULL))
);
"""

DOWNGRADE = """
DROP TABLE export_positions;
DROP INDEX ix_rated_events_written;
ALTER TABLE rated_events DROP COLUMN written_xid;
"""


def upgrade() -> None:
    """Add the commit-order column and the exporters' positions."""
    for statement in _statements(UPGRADE):
        op.execute(statement)


def downgrade() -> None:
    """Drop them (exporters start again from the first event)."""
    for statement in _statements(DOWNGRADE):
        op.execute(statement)
