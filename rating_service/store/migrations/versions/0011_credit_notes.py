"""Credit notes with gapless per-tenant numbers, their refunds, and operators' payment retries.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03

A credit note is written in one transaction with its number, its ledger transfers and the
invoice it credits (docs/billing.md, "Credit notes"); its refund, when the invoice was paid,
is a row of its own that records the gateway's (or the pool's) answer, as a payment attempt does.
"""

from __future__ import annotations

import importlib

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

_statements = importlib.import_module(
    "rating_service.store.migrations.versions.0003_contracts_and_ledger"
).sql_statements

UPGRADE = """
-- One row per credit note; `document` is the credit note in its dict form (lines, total).
CREATE TABLE credit_notes (
    tenant_id      text NOT NULL REFERENCES tenants (tenant_id),
    credit_note_id text NOT NULL,
    number         text NOT NULL,
    request_id     text NOT NULL,
    request_hash   text NOT NULL,
    invoice_id     text NOT NULL,
    contract_id    text NOT NULL,
    customer_id    text NOT NULL,
    amount         numeric NOT NULL CHECK (amount > 0),
    currency       text NOT NULL,
    reason         text NOT NULL CHECK (reason IN
                   ('duplicate', 'fraudulent', 'order_change', 'product_unsatisfactory', 'other')),
    refund_to      text CHECK (refund_to IN ('gateway', 'pool')),
    document       jsonb NOT NULL,
    html           text,
    pdf            bytea,
    issued_at      timestamptz NOT NULL,
    CONSTRAINT pk_credit_notes PRIMARY KEY (tenant_id, credit_note_id),
    CONSTRAINT uq_credit_notes_number UNIQUE (tenant_id, number),
    CONSTRAINT uq_credit_notes_request UNIQUE (tenant_id, request_id),
    CONSTRAINT fk_credit_notes_invoice FOREIGN KEY (tenant_id, invoice_id)
        REFERENCES invoices (tenant_id, invoice_id)
);
CREATE INDEX ix_credit_notes_invoice ON credit_notes (tenant_id, invoice_id);
CREATE INDEX ix_credit_notes_issued ON credit_notes (tenant_id, issued_at);

-- The last credit note number given per tenant, taken as invoice numbers are (gapless).
CREATE TABLE credit_note_numbers (
    tenant_id   text PRIMARY KEY REFERENCES tenants (tenant_id),
    last_number bigint NOT NULL CHECK (last_number >= 0)
);

-- The refund of a paid invoice's credit note: one per credit note, keyed for the gateway by
-- its attempt (a failed refund asked again is made again, under the next attempt's key).
CREATE TABLE refunds (
    tenant_id         text NOT NULL,
    credit_note_id    text NOT NULL,
    idempotency_key   text NOT NULL,
    invoice_id        text NOT NULL,
    destination       text NOT NULL CHECK (destination IN ('gateway', 'pool')),
    amount            numeric NOT NULL CHECK (amount > 0),
    currency          text NOT NULL,
    attempts          integer NOT NULL DEFAULT 1 CHECK (attempts >= 1),
    status            text NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed')),
    failure_code      text,
    failure_message   text,
    gateway_reference text,
    pool_id           text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    settled_at        timestamptz,
    CONSTRAINT pk_refunds PRIMARY KEY (tenant_id, credit_note_id),
    CONSTRAINT fk_refunds_credit_note FOREIGN KEY (tenant_id, credit_note_id)
        REFERENCES credit_notes (tenant_id, credit_note_id)
);

-- The simulated gateway's refunds, beside its charges (a real gateway keeps its own).
CREATE TABLE simulated_refunds (
    idempotency_key text PRIMARY KEY,
    charge_id       text NOT NULL,
    reference       text NOT NULL,
    amount          numeric NOT NULL,
    currency        text NOT NULL,
    outcome         text NOT NULL CHECK (outcome IN ('succeeded', 'failed')),
    failure_code    text,
    refund_id       text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ix_simulated_refunds_charge_id ON simulated_refunds (charge_id);

-- Operators' requests to retry collecting an invoice now, by request id (asked twice, once).
CREATE TABLE payment_retries (
    tenant_id    text NOT NULL,
    request_id   text NOT NULL,
    invoice_id   text NOT NULL,
    workflow_id  text NOT NULL,
    actor        text NOT NULL,
    requested_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT pk_payment_retries PRIMARY KEY (tenant_id, request_id),
    CONSTRAINT fk_payment_retries_invoice FOREIGN KEY (tenant_id, invoice_id)
        REFERENCES invoices (tenant_id, invoice_id)
);
"""

DOWNGRADE = """
DROP TABLE payment_retries;
DROP TABLE simulated_refunds;
DROP TABLE refunds;
DROP TABLE credit_note_numbers;
DROP TABLE credit_notes;
"""


def upgrade() -> None:
    """Create the credit note, refund and payment retry tables."""
    for statement in _statements(UPGRADE):
        op.execute(statement)


def downgrade() -> None:
    """Drop them."""
    for statement in _statements(DOWNGRADE):
        op.execute(statement)
