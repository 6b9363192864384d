"""Webhook endpoints and their delivery log, and auto-recharge attempts.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-21
"""

from __future__ import annotations

import importlib

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_statements = importlib.import_module(
    "rating_service.store.migrations.versions.0003_contracts_and_ledger"
).sql_statements

UPGRADE = """
-- Where a tenant's notifications go; `topics` NULL means every topic.
CREATE TABLE webhook_endpoints (
    endpoint_id text PRIMARY KEY,
    tenant_id   text NOT NULL REFERENCES tenants (tenant_id),
    url         text NOT NULL,
    secret      text NOT NULL,
    topics      text[],
    created_at  timestamptz NOT NULL DEFAULT now(),
    disabled_at timestamptz
);
CREATE INDEX ix_webhook_endpoints_tenant ON webhook_endpoints (tenant_id);

-- Every attempt to deliver a notification to an endpoint, successful or not.
CREATE TABLE webhook_deliveries (
    delivery_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id   text NOT NULL,
    endpoint_id text NOT NULL REFERENCES webhook_endpoints (endpoint_id),
    event_id    text NOT NULL,
    topic       text NOT NULL,
    attempt     integer NOT NULL CHECK (attempt >= 1),
    status_code integer,
    error       text,
    succeeded   boolean NOT NULL,
    at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ix_webhook_deliveries_event ON webhook_deliveries (tenant_id, event_id);

-- Auto-recharges: one row per recharge, its charge attempts and the pool it granted.
CREATE TABLE recharges (
    tenant_id    text NOT NULL,
    recharge_id  text NOT NULL,
    contract_id  text NOT NULL REFERENCES contracts (contract_id),
    amount       numeric NOT NULL CHECK (amount > 0),
    state        text NOT NULL CHECK (state IN ('pending', 'succeeded', 'failed')),
    attempts     integer NOT NULL DEFAULT 0,
    pool_id      text,
    failure_code text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    settled_at   timestamptz,
    CONSTRAINT pk_recharges PRIMARY KEY (tenant_id, recharge_id)
);
CREATE INDEX ix_recharges_contract ON recharges (contract_id, created_at);
"""

DOWNGRADE = """
DROP TABLE recharges;
DROP TABLE webhook_deliveries;
DROP TABLE webhook_endpoints;
"""


def upgrade() -> None:
    """Create the lifecycle tables."""
    for statement in _statements(UPGRADE):
        op.execute(statement)


def downgrade() -> None:
    """Drop them."""
    for statement in _statements(DOWNGRADE):
        op.execute(statement)
