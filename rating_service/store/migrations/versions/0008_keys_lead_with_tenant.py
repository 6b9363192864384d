"""Every primary key, unique key and foreign key between tenant tables leads with tenant_id.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05

What sharding by tenant needs (docs/scaling.md): Citus can enforce a unique key, and a foreign
key between two distributed tables, only when it includes the distribution column. The tables
keyed by contract alone (usage counters, period draws, contract periods, fired alerts) get a
tenant_id column, filled from their contract. Existing rows keep their keys: every old key is
unique per tenant too (the old keys were unique globally), so every new key holds on the data
as it is. The global tables stay as they are: tenants, api_keys, simulated_charges (see
tests/integration/store/test_tenant_keys.py for why).

One transaction, as Alembic runs every migration: it takes ACCESS EXCLUSIVE locks on the tables
it rekeys and rebuilds their keys' indexes, and re-checks every foreign key it recreates (the
largest cost: transfers against accounts). docs/scaling.md says how long to expect and how to
do the same online on a large database.
"""

from __future__ import annotations

import importlib

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_statements = importlib.import_module(
    "rating_service.store.migrations.versions.0003_contracts_and_ledger"
).sql_statements

# The tables whose rows name a contract but not its tenant (0003 keyed them by contract alone).
_CONTRACT_TABLES = ("usage_counters", "period_draws", "contract_periods", "fired_alerts")

UPGRADE = """
-- The foreign keys that point at keys about to change go first (their names are the ones
-- PostgreSQL gave the inline REFERENCES of migrations 0003-0005).
ALTER TABLE accounts DROP CONSTRAINT accounts_contract_id_fkey;
ALTER TABLE pools DROP CONSTRAINT pools_contract_id_fkey, DROP CONSTRAINT pools_account_id_fkey;
ALTER TABLE transfers DROP CONSTRAINT transfers_debit_account_id_fkey,
    DROP CONSTRAINT transfers_credit_account_id_fkey;
ALTER TABLE usage_counters DROP CONSTRAINT usage_counters_contract_id_fkey;
ALTER TABLE period_draws DROP CONSTRAINT period_draws_contract_id_fkey;
ALTER TABLE contract_periods DROP CONSTRAINT contract_periods_contract_id_fkey;
ALTER TABLE fired_alerts DROP CONSTRAINT fired_alerts_contract_id_fkey;
ALTER TABLE reservations DROP CONSTRAINT reservations_contract_id_fkey;
ALTER TABLE invoices DROP CONSTRAINT invoices_contract_id_fkey;
ALTER TABLE recharges DROP CONSTRAINT recharges_contract_id_fkey;
ALTER TABLE webhook_deliveries DROP CONSTRAINT webhook_deliveries_endpoint_id_fkey;

{fill_tenants}

-- Primary keys.
ALTER TABLE audit_log DROP CONSTRAINT pk_audit_log,
    ADD CONSTRAINT pk_audit_log PRIMARY KEY (tenant_id, audit_id);
ALTER TABLE contracts DROP CONSTRAINT contracts_pkey,
    ADD CONSTRAINT pk_contracts PRIMARY KEY (tenant_id, contract_id);
ALTER TABLE accounts DROP CONSTRAINT accounts_pkey,
    ADD CONSTRAINT pk_accounts PRIMARY KEY (tenant_id, account_id);
ALTER TABLE pools DROP CONSTRAINT pools_pkey,
    ADD CONSTRAINT pk_pools PRIMARY KEY (tenant_id, pool_id);
ALTER TABLE usage_counters DROP CONSTRAINT pk_usage_counters,
    ADD CONSTRAINT pk_usage_counters
    PRIMARY KEY (tenant_id, contract_id, period_start, product_key, cell);
ALTER TABLE period_draws DROP CONSTRAINT pk_period_draws,
    ADD CONSTRAINT pk_period_draws
    PRIMARY KEY (tenant_id, contract_id, period_start, product_key, pool_id);
ALTER TABLE contract_periods DROP CONSTRAINT pk_contract_periods,
    ADD CONSTRAINT pk_contract_periods PRIMARY KEY (tenant_id, contract_id, period_start);
ALTER TABLE fired_alerts DROP CONSTRAINT pk_fired_alerts,
    ADD CONSTRAINT pk_fired_alerts PRIMARY KEY (tenant_id, contract_id, alert_key);
ALTER TABLE outbox DROP CONSTRAINT outbox_pkey,
    ADD CONSTRAINT pk_outbox PRIMARY KEY (tenant_id, outbox_id);
ALTER TABLE webhook_endpoints DROP CONSTRAINT webhook_endpoints_pkey,
    ADD CONSTRAINT pk_webhook_endpoints PRIMARY KEY (tenant_id, endpoint_id);
ALTER TABLE webhook_deliveries DROP CONSTRAINT webhook_deliveries_pkey,
    ADD CONSTRAINT pk_webhook_deliveries PRIMARY KEY (tenant_id, delivery_id);
ALTER TABLE invoice_replays DROP CONSTRAINT invoice_replays_pkey,
    ADD CONSTRAINT pk_invoice_replays PRIMARY KEY (tenant_id, replay_id);

-- Unique keys. A dedupe key names its tenant already (Topic.dedupe_key) or an id unique on
-- its own, so scoping it to the tenant merges no two rows that exist.
ALTER TABLE pools DROP CONSTRAINT uq_pools_account_id,
    ADD CONSTRAINT uq_pools_account_id UNIQUE (tenant_id, account_id);
ALTER TABLE outbox DROP CONSTRAINT uq_outbox_dedupe_key,
    ADD CONSTRAINT uq_outbox_dedupe_key UNIQUE (tenant_id, dedupe_key);
ALTER TABLE invoices DROP CONSTRAINT uq_invoices_revision,
    ADD CONSTRAINT uq_invoices_revision UNIQUE (tenant_id, contract_id, billing_date, revision);
DROP INDEX uq_invoices_live;
CREATE UNIQUE INDEX uq_invoices_live ON invoices (tenant_id, contract_id, billing_date)
    WHERE state <> 'void';
DROP INDEX uq_accounts_contract_kind_product;
CREATE UNIQUE INDEX uq_accounts_contract_kind_product
    ON accounts (tenant_id, contract_id, kind, coalesce(product_key, '')) WHERE kind <> 'pool';

-- Foreign keys again, each carrying the tenant: a row can only point into its own tenant.
ALTER TABLE accounts ADD CONSTRAINT fk_accounts_contract FOREIGN KEY (tenant_id, contract_id)
    REFERENCES contracts (tenant_id, contract_id);
ALTER TABLE pools ADD CONSTRAINT fk_pools_contract FOREIGN KEY (tenant_id, contract_id)
    REFERENCES contracts (tenant_id, contract_id),
    ADD CONSTRAINT fk_pools_account FOREIGN KEY (tenant_id, account_id)
    REFERENCES accounts (tenant_id, account_id);
ALTER TABLE transfers
    ADD CONSTRAINT fk_transfers_debit_account FOREIGN KEY (tenant_id, debit_account_id)
    REFERENCES accounts (tenant_id, account_id),
    ADD CONSTRAINT fk_transfers_credit_account FOREIGN KEY (tenant_id, credit_account_id)
    REFERENCES accounts (tenant_id, account_id);
ALTER TABLE usage_counters ADD CONSTRAINT fk_usage_counters_contract
    FOREIGN KEY (tenant_id, contract_id) REFERENCES contracts (tenant_id, contract_id);
ALTER TABLE period_draws ADD CONSTRAINT fk_period_draws_contract
    FOREIGN KEY (tenant_id, contract_id) REFERENCES contracts (tenant_id, contract_id);
ALTER TABLE contract_periods ADD CONSTRAINT fk_contract_periods_contract
    FOREIGN KEY (tenant_id, contract_id) REFERENCES contracts (tenant_id, contract_id);
ALTER TABLE fired_alerts ADD CONSTRAINT fk_fired_alerts_contract
    FOREIGN KEY (tenant_id, contract_id) REFERENCES contracts (tenant_id, contract_id);
ALTER TABLE reservations ADD CONSTRAINT fk_reservations_contract
    FOREIGN KEY (tenant_id, contract_id) REFERENCES contracts (tenant_id, contract_id);
ALTER TABLE invoices ADD CONSTRAINT fk_invoices_contract
    FOREIGN KEY (tenant_id, contract_id) REFERENCES contracts (tenant_id, contract_id);
ALTER TABLE recharges ADD CONSTRAINT fk_recharges_contract
    FOREIGN KEY (tenant_id, contract_id) REFERENCES contracts (tenant_id, contract_id);
ALTER TABLE webhook_deliveries ADD CONSTRAINT fk_webhook_deliveries_endpoint
    FOREIGN KEY (tenant_id, endpoint_id) REFERENCES webhook_endpoints (tenant_id, endpoint_id);
"""

FILL_TENANT = """
ALTER TABLE {table} ADD COLUMN tenant_id text;
UPDATE {table} t SET tenant_id = c.tenant_id FROM contracts c WHERE c.contract_id = t.contract_id;
ALTER TABLE {table} ALTER COLUMN tenant_id SET NOT NULL;
"""
"""Give a contract-keyed table its tenant: a foreign key kept every row's contract in place."""

DOWNGRADE = """
ALTER TABLE webhook_deliveries DROP CONSTRAINT fk_webhook_deliveries_endpoint;
ALTER TABLE recharges DROP CONSTRAINT fk_recharges_contract;
ALTER TABLE invoices DROP CONSTRAINT fk_invoices_contract;
ALTER TABLE reservations DROP CONSTRAINT fk_reservations_contract;
ALTER TABLE fired_alerts DROP CONSTRAINT fk_fired_alerts_contract;
ALTER TABLE contract_periods DROP CONSTRAINT fk_contract_periods_contract;
ALTER TABLE period_draws DROP CONSTRAINT fk_period_draws_contract;
ALTER TABLE usage_counters DROP CONSTRAINT fk_usage_counters_contract;
ALTER TABLE transfers DROP CONSTRAINT fk_transfers_debit_account,
    DROP CONSTRAINT fk_transfers_credit_account;
ALTER TABLE pools DROP CONSTRAINT fk_pools_contract, DROP CONSTRAINT fk_pools_account;
ALTER TABLE accounts DROP CONSTRAINT fk_accounts_contract;

DROP INDEX uq_accounts_contract_kind_product;
CREATE UNIQUE INDEX uq_accounts_contract_kind_product
    ON accounts (contract_id, kind, coalesce(product_key, '')) WHERE kind <> 'pool';
DROP INDEX uq_invoices_live;
CREATE UNIQUE INDEX uq_invoices_live ON invoices (contract_id, billing_date) WHERE state <> 'void';
ALTER TABLE invoices DROP CONSTRAINT uq_invoices_revision,
    ADD CONSTRAINT uq_invoices_revision UNIQUE (contract_id, billing_date, revision);
ALTER TABLE outbox DROP CONSTRAINT uq_outbox_dedupe_key,
    ADD CONSTRAINT uq_outbox_dedupe_key UNIQUE (dedupe_key);
ALTER TABLE pools DROP CONSTRAINT uq_pools_account_id,
    ADD CONSTRAINT uq_pools_account_id UNIQUE (account_id);

ALTER TABLE invoice_replays DROP CONSTRAINT pk_invoice_replays,
    ADD CONSTRAINT invoice_replays_pkey PRIMARY KEY (replay_id);
ALTER TABLE webhook_deliveries DROP CONSTRAINT pk_webhook_deliveries,
    ADD CONSTRAINT webhook_deliveries_pkey PRIMARY KEY (delivery_id);
ALTER TABLE webhook_endpoints DROP CONSTRAINT pk_webhook_endpoints,
    ADD CONSTRAINT webhook_endpoints_pkey PRIMARY KEY (endpoint_id);
ALTER TABLE outbox DROP CONSTRAINT pk_outbox,
    ADD CONSTRAINT outbox_pkey PRIMARY KEY (outbox_id);
ALTER TABLE fired_alerts DROP CONSTRAINT pk_fired_alerts,
    ADD CONSTRAINT pk_fired_alerts PRIMARY KEY (contract_id, alert_key);
ALTER TABLE contract_periods DROP CONSTRAINT pk_contract_periods,
    ADD CONSTRAINT pk_contract_periods PRIMARY KEY (contract_id, period_start);
ALTER TABLE period_draws DROP CONSTRAINT pk_period_draws,
    ADD CONSTRAINT pk_period_draws PRIMARY KEY (contract_id, period_start, product_key, pool_id);
ALTER TABLE usage_counters DROP CONSTRAINT pk_usage_counters,
    ADD CONSTRAINT pk_usage_counters PRIMARY KEY (contract_id, period_start, product_key, cell);
ALTER TABLE pools DROP CONSTRAINT pk_pools, ADD CONSTRAINT pools_pkey PRIMARY KEY (pool_id);
ALTER TABLE accounts DROP CONSTRAINT pk_accounts,
    ADD CONSTRAINT accounts_pkey PRIMARY KEY (account_id);
ALTER TABLE contracts DROP CONSTRAINT pk_contracts,
    ADD CONSTRAINT contracts_pkey PRIMARY KEY (contract_id);
ALTER TABLE audit_log DROP CONSTRAINT pk_audit_log,
    ADD CONSTRAINT pk_audit_log PRIMARY KEY (audit_id);

ALTER TABLE usage_counters DROP COLUMN tenant_id;
ALTER TABLE period_draws DROP COLUMN tenant_id;
ALTER TABLE contract_periods DROP COLUMN tenant_id;
ALTER TABLE fired_alerts DROP COLUMN tenant_id;

ALTER TABLE accounts ADD CONSTRAINT accounts_contract_id_fkey FOREIGN KEY (contract_id)
    REFERENCES contracts (contract_id);
ALTER TABLE pools ADD CONSTRAINT pools_contract_id_fkey FOREIGN KEY (contract_id)
    REFERENCES contracts (contract_id),
    ADD CONSTRAINT pools_account_id_fkey FOREIGN KEY (account_id)
    REFERENCES accounts (account_id);
ALTER TABLE transfers ADD CONSTRAINT transfers_debit_account_id_fkey
    FOREIGN KEY (debit_account_id) REFERENCES accounts (account_id),
    ADD CONSTRAINT transfers_credit_account_id_fkey
    FOREIGN KEY (credit_account_id) REFERENCES accounts (account_id);
ALTER TABLE usage_counters ADD CONSTRAINT usage_counters_contract_id_fkey
    FOREIGN KEY (contract_id) REFERENCES contracts (contract_id);
ALTER TABLE period_draws ADD CONSTRAINT period_draws_contract_id_fkey
    FOREIGN KEY (contract_id) REFERENCES contracts (contract_id);
ALTER TABLE contract_periods ADD CONSTRAINT contract_periods_contract_id_fkey
    FOREIGN KEY (contract_id) REFERENCES contracts (contract_id);
ALTER TABLE fired_alerts ADD CONSTRAINT fired_alerts_contract_id_fkey
    FOREIGN KEY (contract_id) REFERENCES contracts (contract_id);
ALTER TABLE reservations ADD CONSTRAINT reservations_contract_id_fkey
    FOREIGN KEY (contract_id) REFERENCES contracts (contract_id);
ALTER TABLE invoices ADD CONSTRAINT invoices_contract_id_fkey
    FOREIGN KEY (contract_id) REFERENCES contracts (contract_id);
ALTER TABLE recharges ADD CONSTRAINT recharges_contract_id_fkey
    FOREIGN KEY (contract_id) REFERENCES contracts (contract_id);
ALTER TABLE webhook_deliveries ADD CONSTRAINT webhook_deliveries_endpoint_id_fkey
    FOREIGN KEY (endpoint_id) REFERENCES webhook_endpoints (endpoint_id);
"""


def upgrade() -> None:
    """Lead every key with the tenant; give contract-keyed tables their tenant first."""
    fill = "\n".join(FILL_TENANT.format(table=table) for table in _CONTRACT_TABLES)
    for statement in _statements(UPGRADE.replace("{fill_tenants}", fill)):
        op.execute(statement)


def downgrade() -> None:
    """Back to 0007's keys (refused if two tenants now share an id the old keys made unique)."""
    for statement in _statements(DOWNGRADE):
        op.execute(statement)
