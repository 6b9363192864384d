"""Customers, contracts, pools, the double-entry ledger, rated events, counters and the outbox.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# Plain SQL: the ledger's guarantees (CHECKs, append-only transfers) read best as the database
# states them. Amounts are NUMERIC without scale, so PostgreSQL keeps every digit we send.
UPGRADE = """
CREATE TABLE customers (
    tenant_id   text NOT NULL REFERENCES tenants (tenant_id),
    customer_id text NOT NULL,
    name        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT pk_customers PRIMARY KEY (tenant_id, customer_id)
);

CREATE TABLE contracts (
    contract_id text PRIMARY KEY,
    tenant_id   text NOT NULL,
    customer_id text NOT NULL,
    term_start  timestamptz NOT NULL,
    term_end    timestamptz,
    status      text NOT NULL DEFAULT 'active'
                CHECK (status IN ('active', 'suspended', 'ended')),
    definition  jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT fk_contracts_customer FOREIGN KEY (tenant_id, customer_id)
        REFERENCES customers (tenant_id, customer_id),
    CONSTRAINT ck_contracts_term CHECK (term_end IS NULL OR term_end > term_start)
);
CREATE INDEX ix_contracts_customer ON contracts (tenant_id, customer_id, term_start);

-- TigerBeetle-style accounts: running posted / pending totals, balance rules as flags, and the
-- database refusing any row that breaks them even if the code above it is wrong.
CREATE TABLE accounts (
    account_id      text PRIMARY KEY,
    tenant_id       text NOT NULL REFERENCES tenants (tenant_id),
    contract_id     text REFERENCES contracts (contract_id),
    kind            text NOT NULL,
    product_key     text,
    currency        text NOT NULL,
    flags           integer NOT NULL DEFAULT 0,
    debits_posted   numeric NOT NULL DEFAULT 0 CHECK (debits_posted >= 0),
    credits_posted  numeric NOT NULL DEFAULT 0 CHECK (credits_posted >= 0),
    debits_pending  numeric NOT NULL DEFAULT 0 CHECK (debits_pending >= 0),
    credits_pending numeric NOT NULL DEFAULT 0 CHECK (credits_pending >= 0),
    created_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT ck_accounts_debits_must_not_exceed_credits
        CHECK (flags & 1 = 0 OR debits_posted + debits_pending <= credits_posted),
    CONSTRAINT ck_accounts_credits_must_not_exceed_debits
        CHECK (flags & 2 = 0 OR credits_posted + credits_pending <= debits_posted)
);
CREATE UNIQUE INDEX uq_accounts_contract_kind_product
    ON accounts (contract_id, kind, coalesce(product_key, '')) WHERE kind <> 'pool';
CREATE UNIQUE INDEX uq_accounts_tenant_kind
    ON accounts (tenant_id, kind) WHERE contract_id IS NULL;

-- A commitment's terms; its balance lives in its ledger account (none for a postpaid commit,
-- which is a minimum spend, not a balance).
CREATE TABLE pools (
    pool_id         text PRIMARY KEY,
    account_id      text CONSTRAINT uq_pools_account_id UNIQUE REFERENCES accounts (account_id),
    tenant_id       text NOT NULL,
    contract_id     text NOT NULL REFERENCES contracts (contract_id),
    grant_id        text NOT NULL,
    -- Fingerprint of the request that created it: a retry must match it (idempotency).
    request_hash    bytea NOT NULL,
    kind            text NOT NULL
                    CHECK (kind IN ('prepaid_commit', 'postpaid_commit', 'credit')),
    priority        integer NOT NULL,
    cost_basis      numeric NOT NULL CHECK (cost_basis >= 0 AND cost_basis <= 1),
    scope           text[],
    starts_at       timestamptz NOT NULL,
    expires_at      timestamptz,
    created_seq     bigint GENERATED ALWAYS AS IDENTITY,
    original_amount numeric NOT NULL CHECK (original_amount >= 0),
    definition      jsonb NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT uq_pools_grant UNIQUE (tenant_id, grant_id),
    CONSTRAINT ck_pools_window CHECK (expires_at IS NULL OR expires_at > starts_at)
);
CREATE INDEX ix_pools_contract ON pools (contract_id);

-- Immutable movements. Every transfer names what it is traceable to.
CREATE TABLE transfers (
    tenant_id         text NOT NULL,
    transfer_id       text NOT NULL,
    -- Journal order: replaying transfers by seq rebuilds every account (`rating ops reconcile`).
    seq               bigint GENERATED ALWAYS AS IDENTITY,
    debit_account_id  text NOT NULL REFERENCES accounts (account_id),
    credit_account_id text NOT NULL REFERENCES accounts (account_id),
    amount            numeric NOT NULL CHECK (amount > 0),
    flags             integer NOT NULL DEFAULT 0,
    pending_id        text,
    code              text NOT NULL,
    reference         text NOT NULL,
    memo              text NOT NULL DEFAULT '',
    created_at        timestamptz NOT NULL DEFAULT now(),
    -- Ids derive from business keys (`usage:event:<id>:1`), so a double post is a key conflict.
    CONSTRAINT pk_transfers PRIMARY KEY (tenant_id, transfer_id),
    CONSTRAINT fk_transfers_pending FOREIGN KEY (tenant_id, pending_id)
        REFERENCES transfers (tenant_id, transfer_id),
    CONSTRAINT ck_transfers_two_accounts CHECK (debit_account_id <> credit_account_id)
);
CREATE INDEX ix_transfers_debit ON transfers (debit_account_id);
CREATE INDEX ix_transfers_credit ON transfers (credit_account_id);
CREATE INDEX ix_transfers_reference ON transfers (tenant_id, reference);

CREATE FUNCTION transfers_are_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'transfers are append-only: % is refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER transfers_append_only BEFORE UPDATE OR DELETE ON transfers
    FOR EACH STATEMENT EXECUTE FUNCTION transfers_are_immutable();

-- One row per rated event: the idempotency record and the stored answer replays return.
CREATE TABLE rated_events (
    tenant_id    text NOT NULL,
    event_id     text NOT NULL,
    request_hash bytea NOT NULL,
    contract_id  text NOT NULL,
    event_time   timestamptz NOT NULL,
    period_start timestamptz NOT NULL,
    charge       numeric NOT NULL,
    result       jsonb NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT pk_rated_events PRIMARY KEY (tenant_id, event_id)
);
CREATE INDEX ix_rated_events_contract_period ON rated_events (contract_id, period_start);

-- Period-to-date quantity and amount per contract × product × cell: what incremental pricing
-- needs (c in P(c + x) − P(c)) and what the invoice aggregates, whatever the event count.
CREATE TABLE usage_counters (
    contract_id  text NOT NULL REFERENCES contracts (contract_id),
    period_start timestamptz NOT NULL,
    product_key  text NOT NULL,
    cell         text[] NOT NULL,
    quantity     numeric NOT NULL,
    amount       numeric NOT NULL,
    events       bigint NOT NULL,
    CONSTRAINT pk_usage_counters PRIMARY KEY (contract_id, period_start, product_key, cell)
);

-- What each product drew from each pool (or accrued as overage, pool_id '') in a period: a
-- negative charge gives back to where the period's spend came from, never beyond it.
CREATE TABLE period_draws (
    contract_id  text NOT NULL REFERENCES contracts (contract_id),
    period_start timestamptz NOT NULL,
    product_key  text NOT NULL,
    pool_id      text NOT NULL,
    amount       numeric NOT NULL,
    CONSTRAINT pk_period_draws PRIMARY KEY (contract_id, period_start, product_key, pool_id)
);

-- Each billing period's spend (for the spend cap), overage, and whether it still takes usage.
CREATE TABLE contract_periods (
    contract_id  text NOT NULL REFERENCES contracts (contract_id),
    period_start timestamptz NOT NULL,
    period_end   timestamptz NOT NULL,
    spend        numeric NOT NULL DEFAULT 0,
    overage      numeric NOT NULL DEFAULT 0,
    state        text NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'closed', 'invoiced')),
    CONSTRAINT pk_contract_periods PRIMARY KEY (contract_id, period_start)
);

-- Alerts fire once per crossing: a fired alert stays here until its condition clears.
CREATE TABLE fired_alerts (
    contract_id text NOT NULL REFERENCES contracts (contract_id),
    alert_key   text NOT NULL,
    fired_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT pk_fired_alerts PRIMARY KEY (contract_id, alert_key)
);

CREATE TABLE reservations (
    tenant_id      text NOT NULL,
    reservation_id text NOT NULL,
    contract_id    text NOT NULL REFERENCES contracts (contract_id),
    request_hash   bytea NOT NULL,
    product_key    text NOT NULL,
    amount         numeric NOT NULL CHECK (amount >= 0),
    holds          jsonb NOT NULL,
    state          text NOT NULL CHECK (state IN ('held', 'captured', 'voided', 'expired')),
    expires_at     timestamptz NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    resolved_at    timestamptz,
    CONSTRAINT pk_reservations PRIMARY KEY (tenant_id, reservation_id)
);
CREATE INDEX ix_reservations_expiry ON reservations (expires_at) WHERE state = 'held';

-- Effects that must leave the database, written in the same transaction as their cause.
CREATE TABLE outbox (
    outbox_id    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id    text NOT NULL,
    topic        text NOT NULL,
    dedupe_key   text NOT NULL CONSTRAINT uq_outbox_dedupe_key UNIQUE,
    payload      jsonb NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    delivered_at timestamptz
);
CREATE INDEX ix_outbox_pending ON outbox (outbox_id) WHERE delivered_at IS NULL;
"""

DOWNGRADE = """
DROP TABLE outbox;
DROP TABLE reservations;
DROP TABLE fired_alerts;
DROP TABLE contract_periods;
DROP TABLE period_draws;
DROP TABLE usage_counters;
DROP TABLE rated_events;
DROP TABLE transfers;
DROP FUNCTION transfers_are_immutable();
DROP TABLE pools;
DROP TABLE accounts;
DROP TABLE contracts;
DROP TABLE customers;
"""


def upgrade() -> None:
    """Create the contract and ledger tables."""
    for statement in sql_statements(UPGRADE):
        op.execute(statement)


def downgrade() -> None:
    """Drop them."""
    for statement in sql_statements(DOWNGRADE):
        op.execute(statement)


def sql_statements(script: str) -> list[str]:
    """Split a script at `;` outside `$$` bodies (asyncpg prepares one statement at a time)."""
    statements, current, in_body = [], [], False
    for line in script.splitlines():
        if line.lstrip().startswith("--") and not in_body:
            continue
        current.append(line)
        in_body ^= line.count("$$") % 2 == 1
        if not in_body and line.rstrip().endswith(";"):
            statements.append("\n".join(current).strip().rstrip(";"))
            current = []
    return [s for s in statements if s]
