"""Invoices, gapless per-tenant invoice numbers, payment attempts and the simulated gateway.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-21
"""

from __future__ import annotations

import importlib

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_statements = importlib.import_module(
    "rating_service.store.migrations.versions.0003_contracts_and_ledger"
).sql_statements

UPGRADE = """
-- One row per invoice of a contract's billing date; a voided one is kept and a revision
-- replaces it. `document` is the invoice in its dict form: lines, balances, totals.
CREATE TABLE invoices (
    tenant_id    text NOT NULL REFERENCES tenants (tenant_id),
    invoice_id   text NOT NULL,
    contract_id  text NOT NULL REFERENCES contracts (contract_id),
    customer_id  text NOT NULL,
    billing_date timestamptz NOT NULL,
    revision     integer NOT NULL CHECK (revision >= 0),
    period_start timestamptz NOT NULL,
    period_end   timestamptz NOT NULL,
    currency     text NOT NULL,
    state        text NOT NULL
                 CHECK (state IN ('draft', 'finalized', 'paid', 'uncollectible', 'void')),
    number       text,
    total        numeric NOT NULL,
    document     jsonb NOT NULL,
    html         text,
    pdf          bytea,
    created_at   timestamptz NOT NULL DEFAULT now(),
    issued_at    timestamptz,
    paid_at      timestamptz,
    voided_at    timestamptz,
    CONSTRAINT pk_invoices PRIMARY KEY (tenant_id, invoice_id),
    CONSTRAINT uq_invoices_number UNIQUE (tenant_id, number),
    CONSTRAINT uq_invoices_revision UNIQUE (contract_id, billing_date, revision),
    CONSTRAINT ck_invoices_numbered CHECK ((number IS NULL) = (state = 'draft'))
);
-- At most one live invoice per contract and billing date.
CREATE UNIQUE INDEX uq_invoices_live ON invoices (contract_id, billing_date) WHERE state <> 'void';
CREATE INDEX ix_invoices_tenant_state ON invoices (tenant_id, state, billing_date);

-- The last invoice number given per tenant: taken under the row lock in the transaction that
-- finalizes, so a number is used exactly when an invoice is finalized (gapless).
CREATE TABLE invoice_numbers (
    tenant_id   text PRIMARY KEY REFERENCES tenants (tenant_id),
    last_number bigint NOT NULL CHECK (last_number >= 0)
);

-- Every attempt to collect an invoice, keyed by an idempotency key derived from the invoice.
CREATE TABLE payment_attempts (
    tenant_id         text NOT NULL,
    idempotency_key   text NOT NULL,
    invoice_id        text NOT NULL,
    attempt           integer NOT NULL CHECK (attempt >= 1),
    amount            numeric NOT NULL CHECK (amount > 0),
    currency          text NOT NULL,
    payment_method    text NOT NULL,
    status            text NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed')),
    failure_code      text,
    failure_message   text,
    gateway_reference text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    settled_at        timestamptz,
    CONSTRAINT pk_payment_attempts PRIMARY KEY (tenant_id, idempotency_key),
    CONSTRAINT fk_payment_attempts_invoice FOREIGN KEY (tenant_id, invoice_id)
        REFERENCES invoices (tenant_id, invoice_id)
);
CREATE INDEX ix_payment_attempts_invoice ON payment_attempts (tenant_id, invoice_id);

-- The simulated gateway's own books: what it charged under each idempotency key, as a real
-- gateway remembers them, so a retried charge answers the first outcome.
CREATE TABLE simulated_charges (
    idempotency_key text PRIMARY KEY,
    payment_method  text NOT NULL,
    reference       text NOT NULL,
    amount          numeric NOT NULL,
    currency        text NOT NULL,
    outcome         text NOT NULL CHECK (outcome IN ('succeeded', 'declined')),
    decline_code    text,
    charge_id       text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ix_simulated_charges_reference ON simulated_charges (payment_method, reference);
"""

DOWNGRADE = """
DROP TABLE simulated_charges;
DROP TABLE payment_attempts;
DROP TABLE invoice_numbers;
DROP TABLE invoices;
"""


def upgrade() -> None:
    """Create the invoice and payment tables."""
    for statement in _statements(UPGRADE):
        op.execute(statement)


def downgrade() -> None:
    """Drop them."""
    for statement in _statements(DOWNGRADE):
        op.execute(statement)
