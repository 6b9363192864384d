"""Coupons, and the discounts they make when applied to contracts.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03

A coupon counts its redemptions on its own row, locked by each ApplyCoupon, so two requests
at once can never redeem it past `max_redemptions`. A discount keeps a copy of its coupon's
terms (`definition`): a coupon archived later changes no discount already made. ApplyCoupon is
idempotent on the caller's request id (unique per tenant).
"""

from __future__ import annotations

import importlib

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

_statements = importlib.import_module(
    "rating_service.store.migrations.versions.0003_contracts_and_ledger"
).sql_statements

UPGRADE = """
CREATE TABLE coupons (
    tenant_id     text NOT NULL,
    coupon_id     text NOT NULL,
    definition    jsonb NOT NULL,
    redemptions   integer DEFAULT 0 NOT NULL,
    archived_at   timestamptz,
    created_at    timestamptz DEFAULT now() NOT NULL,
    CONSTRAINT pk_coupons PRIMARY KEY (tenant_id, coupon_id),
    CONSTRAINT fk_coupons_tenant_id_tenants FOREIGN KEY (tenant_id) REFERENCES tenants (tenant_id),
    CONSTRAINT ck_coupons_redemptions_not_negative CHECK (redemptions >= 0)
);

CREATE TABLE contract_discounts (
    tenant_id     text NOT NULL,
    discount_id   text NOT NULL,
    contract_id   text NOT NULL,
    coupon_id     text NOT NULL,
    request_id    text NOT NULL,
    fingerprint   text NOT NULL,
    definition    jsonb NOT NULL,
    applied_at    timestamptz NOT NULL,
    removed_at    timestamptz,
    CONSTRAINT pk_contract_discounts PRIMARY KEY (tenant_id, discount_id),
    CONSTRAINT uq_contract_discounts_request UNIQUE (tenant_id, request_id),
    CONSTRAINT fk_contract_discounts_contract FOREIGN KEY (tenant_id, contract_id)
        REFERENCES contracts (tenant_id, contract_id),
    CONSTRAINT fk_contract_discounts_coupon FOREIGN KEY (tenant_id, coupon_id)
        REFERENCES coupons (tenant_id, coupon_id)
);

CREATE INDEX ix_contract_discounts_contract ON contract_discounts (tenant_id, contract_id);
"""

DOWNGRADE = """
DROP TABLE contract_discounts;
DROP TABLE coupons;
"""


def upgrade() -> None:
    """Create the coupons and contract discounts tables."""
    for statement in _statements(UPGRADE):
        op.execute(statement)


def downgrade() -> None:
    """Drop them."""
    for statement in _statements(DOWNGRADE):
        op.execute(statement)
