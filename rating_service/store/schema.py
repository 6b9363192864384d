"""The database schema as SQLAlchemy Core tables; Alembic migrations create exactly this."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    ForeignKeyConstraint,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    PrimaryKeyConstraint,
    Table,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.sql import text

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


def _contract_of(table: str) -> ForeignKeyConstraint:
    """A row's contract, within the row's own tenant (the key a tenant shard can check)."""
    return ForeignKeyConstraint(
        ["tenant_id", "contract_id"],
        ["contracts.tenant_id", "contracts.contract_id"],
        name=f"fk_{table}_contract",
    )


# Every key of a tenant's table leads with tenant_id, so the tables can be sharded by tenant
# (docs/scaling.md); the global tables are tenants, api_keys, simulated_charges and
# simulated_refunds
# (tests/integration/store/test_tenant_keys.py says why).
tenants = Table(
    "tenants",
    metadata,
    Column("tenant_id", Text, primary_key=True),
    Column("name", Text, nullable=False, unique=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("key_id", Text, primary_key=True),
    Column("tenant_id", Text, ForeignKey("tenants.tenant_id"), nullable=False),
    Column("role", Text, nullable=False),
    Column("name", Text, nullable=False),
    Column("secret_hash", LargeBinary, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True)),
    CheckConstraint("role IN ('rater', 'admin', 'ops')", name="role"),
    Index(None, "tenant_id"),
)

# Who did what, for every change an operator or an admin key makes.
audit_log = Table(
    "audit_log",
    metadata,
    Column("audit_id", BigInteger, Identity(), nullable=False),
    Column("tenant_id", Text, ForeignKey("tenants.tenant_id"), nullable=False),
    Column("actor", Text, nullable=False),
    Column("action", Text, nullable=False),
    Column("subject", Text, nullable=False),
    Column("details", JSONB, nullable=False, server_default="{}"),
    Column("at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("tenant_id", "audit_id", name="pk_audit_log"),
    Index(None, "tenant_id", "at"),
)

# The catalog, kept in its documented mapping form (core.pricing reads and writes it).
products = Table(
    "products",
    metadata,
    Column("tenant_id", Text, ForeignKey("tenants.tenant_id"), primary_key=True),
    Column("key", Text, primary_key=True),
    Column("definition", JSONB, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

rate_cards = Table(
    "rate_cards",
    metadata,
    Column("tenant_id", Text, ForeignKey("tenants.tenant_id"), primary_key=True),
    Column("key", Text, primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("effective_from", DateTime(timezone=True), nullable=False),
    Column("effective_until", DateTime(timezone=True)),
    Column("definition", JSONB, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("version >= 1", name="version_positive"),
    CheckConstraint(
        "effective_until IS NULL OR effective_until > effective_from", name="effective_range"
    ),
    # Backstop for the overlap check done under lock: at most one open-ended version per card.
    Index(
        "uq_rate_cards_one_open_version",
        "tenant_id",
        "key",
        unique=True,
        postgresql_where=text("effective_until IS NULL"),
    ),
)

# Bumped by every catalog write; caches compare it and NOTIFY carries the tenant that changed.
catalog_revisions = Table(
    "catalog_revisions",
    metadata,
    Column("tenant_id", Text, ForeignKey("tenants.tenant_id"), primary_key=True),
    Column("revision", BigInteger, nullable=False),
)

# -- contracts and the ledger (migration 0003 states the CHECKs and the append-only trigger) --

customers = Table(
    "customers",
    metadata,
    Column("tenant_id", Text, ForeignKey("tenants.tenant_id"), primary_key=True),
    Column("customer_id", Text, primary_key=True),
    Column("name", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

contracts = Table(
    "contracts",
    metadata,
    Column("contract_id", Text, nullable=False),
    Column("tenant_id", Text, nullable=False),
    Column("customer_id", Text, nullable=False),
    Column("term_start", DateTime(timezone=True), nullable=False),
    Column("term_end", DateTime(timezone=True)),
    Column("status", Text, nullable=False, server_default="active"),
    Column("definition", JSONB, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    ForeignKeyConstraint(
        ["tenant_id", "customer_id"],
        ["customers.tenant_id", "customers.customer_id"],
        name="fk_contracts_customer",
    ),
    PrimaryKeyConstraint("tenant_id", "contract_id", name="pk_contracts"),
    Index("ix_contracts_customer", "tenant_id", "customer_id", "term_start"),
)

accounts = Table(
    "accounts",
    metadata,
    Column("account_id", Text, nullable=False),
    Column("tenant_id", Text, ForeignKey("tenants.tenant_id"), nullable=False),
    Column("contract_id", Text),
    Column("kind", Text, nullable=False),
    Column("product_key", Text),
    Column("currency", Text, nullable=False),
    Column("flags", Integer, nullable=False, server_default="0"),
    Column("debits_posted", Numeric, nullable=False, server_default="0"),
    Column("credits_posted", Numeric, nullable=False, server_default="0"),
    Column("debits_pending", Numeric, nullable=False, server_default="0"),
    Column("credits_pending", Numeric, nullable=False, server_default="0"),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("tenant_id", "account_id", name="pk_accounts"),
    _contract_of("accounts"),
    Index(
        "uq_accounts_contract_kind_product",
        "tenant_id",
        "contract_id",
        "kind",
        func.coalesce(text("product_key"), text("''")),
        unique=True,
        postgresql_where=text("kind <> 'pool'"),
    ),
    Index(
        "uq_accounts_tenant_kind",
        "tenant_id",
        "kind",
        unique=True,
        postgresql_where=text("contract_id IS NULL"),
    ),
)

pools = Table(
    "pools",
    metadata,
    Column("pool_id", Text, nullable=False),
    Column("account_id", Text),
    Column("tenant_id", Text, nullable=False),
    Column("contract_id", Text, nullable=False),
    Column("grant_id", Text, nullable=False),
    Column("request_hash", LargeBinary, nullable=False),
    Column("kind", Text, nullable=False),
    Column("priority", Integer, nullable=False),
    Column("cost_basis", Numeric, nullable=False),
    Column("scope", ARRAY(Text)),
    Column("starts_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True)),
    Column("created_seq", BigInteger, Identity(always=True), nullable=False),
    Column("original_amount", Numeric, nullable=False),
    Column("definition", JSONB, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("tenant_id", "pool_id", name="pk_pools"),
    UniqueConstraint("tenant_id", "grant_id", name="uq_pools_grant"),
    UniqueConstraint("tenant_id", "account_id", name="uq_pools_account_id"),
    _contract_of("pools"),
    ForeignKeyConstraint(
        ["tenant_id", "account_id"],
        ["accounts.tenant_id", "accounts.account_id"],
        name="fk_pools_account",
    ),
    Index("ix_pools_contract", "contract_id"),
)

transfers = Table(
    "transfers",
    metadata,
    Column("tenant_id", Text, primary_key=True),
    Column("transfer_id", Text, primary_key=True),
    Column("seq", BigInteger, Identity(always=True), nullable=False),
    Column("debit_account_id", Text, nullable=False),
    Column("credit_account_id", Text, nullable=False),
    Column("amount", Numeric, nullable=False),
    Column("flags", Integer, nullable=False, server_default="0"),
    Column("pending_id", Text),
    Column("code", Text, nullable=False),
    Column("reference", Text, nullable=False),
    Column("memo", Text, nullable=False, server_default=""),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    ForeignKeyConstraint(
        ["tenant_id", "pending_id"],
        ["transfers.tenant_id", "transfers.transfer_id"],
        name="fk_transfers_pending",
    ),
    ForeignKeyConstraint(
        ["tenant_id", "debit_account_id"],
        ["accounts.tenant_id", "accounts.account_id"],
        name="fk_transfers_debit_account",
    ),
    ForeignKeyConstraint(
        ["tenant_id", "credit_account_id"],
        ["accounts.tenant_id", "accounts.account_id"],
        name="fk_transfers_credit_account",
    ),
    Index("ix_transfers_debit", "debit_account_id"),
    Index("ix_transfers_credit", "credit_account_id"),
    Index("ix_transfers_reference", "tenant_id", "reference"),
)

rated_events = Table(
    "rated_events",
    metadata,
    Column("tenant_id", Text, primary_key=True),
    Column("event_id", Text, primary_key=True),
    Column("request_hash", LargeBinary, nullable=False),
    Column("contract_id", Text, nullable=False),
    Column("event_time", DateTime(timezone=True), nullable=False),
    Column("period_start", DateTime(timezone=True), nullable=False),
    Column("charge", Numeric, nullable=False),
    Column("result", JSONB, nullable=False),
    Column("cost", Numeric, nullable=False, server_default="0"),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # The writing transaction's id: the order exporters read in (migration 0014 says why).
    Column(
        "written_xid",
        BigInteger,
        nullable=False,
        server_default=text("(pg_current_xact_id())::text::bigint"),
    ),
    Index("ix_rated_events_contract_period", "contract_id", "period_start"),
    Index("ix_rated_events_written", "tenant_id", "written_xid", "event_id"),
)

export_positions = Table(
    "export_positions",
    metadata,
    Column("tenant_id", Text, ForeignKey("tenants.tenant_id"), primary_key=True),
    Column("destination", Text, primary_key=True),
    Column("written_xid", BigInteger, nullable=False, server_default="0"),
    Column("event_id", Text, nullable=False, server_default=""),
    Column("batch", BigInteger, nullable=False, server_default="1"),
    Column("pending_xid", BigInteger),
    Column("pending_event_id", Text),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("(pending_xid IS NULL) = (pending_event_id IS NULL)", name="pending"),
)

usage_counters = Table(
    "usage_counters",
    metadata,
    Column("tenant_id", Text, nullable=False),
    Column("contract_id", Text, nullable=False),
    Column("period_start", DateTime(timezone=True), nullable=False),
    Column("product_key", Text, nullable=False),
    Column("cell", ARRAY(Text), nullable=False),
    Column("quantity", Numeric, nullable=False),
    Column("amount", Numeric, nullable=False),
    Column("events", BigInteger, nullable=False),
    Column("cost", Numeric, nullable=False, server_default="0"),
    PrimaryKeyConstraint(
        "tenant_id", "contract_id", "period_start", "product_key", "cell", name="pk_usage_counters"
    ),
    _contract_of("usage_counters"),
)

aggregation_entries = Table(
    "aggregation_entries",
    metadata,
    Column("tenant_id", Text, nullable=False),
    Column("contract_id", Text, nullable=False),
    Column("period_start", DateTime(timezone=True), nullable=False),
    Column("product_key", Text, nullable=False),
    Column("cell", ARRAY(Text), nullable=False),
    Column("entry_key", Text(collation="C"), nullable=False),
    Column("value", Numeric, nullable=False),
    PrimaryKeyConstraint(
        "tenant_id",
        "contract_id",
        "period_start",
        "product_key",
        "cell",
        "entry_key",
        name="pk_aggregation_entries",
    ),
    _contract_of("aggregation_entries"),
)
"""What a meter aggregating beyond sum and count remembers per counter (migration 0009)."""

period_draws = Table(
    "period_draws",
    metadata,
    Column("tenant_id", Text, nullable=False),
    Column("contract_id", Text, nullable=False),
    Column("period_start", DateTime(timezone=True), nullable=False),
    Column("product_key", Text, nullable=False),
    Column("pool_id", Text, nullable=False),
    Column("amount", Numeric, nullable=False),
    PrimaryKeyConstraint(
        "tenant_id", "contract_id", "period_start", "product_key", "pool_id", name="pk_period_draws"
    ),
    _contract_of("period_draws"),
)

contract_periods = Table(
    "contract_periods",
    metadata,
    Column("tenant_id", Text, nullable=False),
    Column("contract_id", Text, nullable=False),
    Column("period_start", DateTime(timezone=True), nullable=False),
    Column("period_end", DateTime(timezone=True), nullable=False),
    Column("spend", Numeric, nullable=False, server_default="0"),
    Column("overage", Numeric, nullable=False, server_default="0"),
    Column("state", Text, nullable=False, server_default="open"),
    PrimaryKeyConstraint("tenant_id", "contract_id", "period_start", name="pk_contract_periods"),
    _contract_of("contract_periods"),
)

fired_alerts = Table(
    "fired_alerts",
    metadata,
    Column("tenant_id", Text, nullable=False),
    Column("contract_id", Text, nullable=False),
    Column("alert_key", Text, nullable=False),
    Column("fired_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("tenant_id", "contract_id", "alert_key", name="pk_fired_alerts"),
    _contract_of("fired_alerts"),
)

reservations = Table(
    "reservations",
    metadata,
    Column("tenant_id", Text, primary_key=True),
    Column("reservation_id", Text, primary_key=True),
    Column("contract_id", Text, nullable=False),
    Column("request_hash", LargeBinary, nullable=False),
    Column("product_key", Text, nullable=False),
    Column("amount", Numeric, nullable=False),
    Column("holds", JSONB, nullable=False),
    Column("state", Text, nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("resolved_at", DateTime(timezone=True)),
    _contract_of("reservations"),
    Index("ix_reservations_expiry", "expires_at", postgresql_where=text("state = 'held'")),
)

outbox = Table(
    "outbox",
    metadata,
    Column("outbox_id", BigInteger, Identity(always=True), nullable=False),
    Column("tenant_id", Text, nullable=False),
    Column("topic", Text, nullable=False),
    Column("dedupe_key", Text, nullable=False),
    Column("payload", JSONB, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("delivered_at", DateTime(timezone=True)),
    PrimaryKeyConstraint("tenant_id", "outbox_id", name="pk_outbox"),
    # Per tenant: a dedupe key names its tenant (Topic.dedupe_key) or an id unique on its own.
    UniqueConstraint("tenant_id", "dedupe_key", name="uq_outbox_dedupe_key"),
    Index("ix_outbox_pending", "outbox_id", postgresql_where=text("delivered_at IS NULL")),
)

# -- invoices and payments (migration 0004 states the CHECKs) --

invoices = Table(
    "invoices",
    metadata,
    Column("tenant_id", Text, ForeignKey("tenants.tenant_id"), primary_key=True),
    Column("invoice_id", Text, primary_key=True),
    Column("contract_id", Text, nullable=False),
    Column("customer_id", Text, nullable=False),
    Column("billing_date", DateTime(timezone=True), nullable=False),
    Column("revision", Integer, nullable=False),
    Column("period_start", DateTime(timezone=True), nullable=False),
    Column("period_end", DateTime(timezone=True), nullable=False),
    Column("currency", Text, nullable=False),
    Column("state", Text, nullable=False),
    Column("number", Text),
    Column("total", Numeric, nullable=False),
    Column("document", JSONB, nullable=False),
    Column("html", Text),
    Column("pdf", LargeBinary),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("issued_at", DateTime(timezone=True)),
    Column("paid_at", DateTime(timezone=True)),
    Column("voided_at", DateTime(timezone=True)),
    UniqueConstraint("tenant_id", "number", name="uq_invoices_number"),
    UniqueConstraint(
        "tenant_id", "contract_id", "billing_date", "revision", name="uq_invoices_revision"
    ),
    _contract_of("invoices"),
    Index(
        "uq_invoices_live",
        "tenant_id",
        "contract_id",
        "billing_date",
        unique=True,
        postgresql_where=text("state <> 'void'"),
    ),
    Index("ix_invoices_tenant_state", "tenant_id", "state", "billing_date"),
)

invoice_numbers = Table(
    "invoice_numbers",
    metadata,
    Column("tenant_id", Text, ForeignKey("tenants.tenant_id"), primary_key=True),
    Column("last_number", BigInteger, nullable=False),
)

payment_attempts = Table(
    "payment_attempts",
    metadata,
    Column("tenant_id", Text, primary_key=True),
    Column("idempotency_key", Text, primary_key=True),
    Column("invoice_id", Text, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("amount", Numeric, nullable=False),
    Column("currency", Text, nullable=False),
    Column("payment_method", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("failure_code", Text),
    Column("failure_message", Text),
    Column("gateway_reference", Text),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("settled_at", DateTime(timezone=True)),
    ForeignKeyConstraint(
        ["tenant_id", "invoice_id"],
        ["invoices.tenant_id", "invoices.invoice_id"],
        name="fk_payment_attempts_invoice",
    ),
    Index("ix_payment_attempts_invoice", "tenant_id", "invoice_id"),
)

simulated_charges = Table(
    "simulated_charges",
    metadata,
    Column("idempotency_key", Text, primary_key=True),
    Column("payment_method", Text, nullable=False),
    Column("reference", Text, nullable=False),
    Column("amount", Numeric, nullable=False),
    Column("currency", Text, nullable=False),
    Column("outcome", Text, nullable=False),
    Column("decline_code", Text),
    Column("charge_id", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("ix_simulated_charges_reference", "payment_method", "reference"),
)

# -- credit notes, refunds and payment retries (migration 0011 states the CHECKs) --

credit_notes = Table(
    "credit_notes",
    metadata,
    Column("tenant_id", Text, ForeignKey("tenants.tenant_id"), primary_key=True),
    Column("credit_note_id", Text, primary_key=True),
    Column("number", Text, nullable=False),
    Column("request_id", Text, nullable=False),
    Column("request_hash", Text, nullable=False),
    Column("invoice_id", Text, nullable=False),
    Column("contract_id", Text, nullable=False),
    Column("customer_id", Text, nullable=False),
    Column("amount", Numeric, nullable=False),
    Column("currency", Text, nullable=False),
    Column("reason", Text, nullable=False),
    Column("refund_to", Text),
    Column("document", JSONB, nullable=False),
    Column("html", Text),
    Column("pdf", LargeBinary),
    Column("issued_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("tenant_id", "number", name="uq_credit_notes_number"),
    UniqueConstraint("tenant_id", "request_id", name="uq_credit_notes_request"),
    ForeignKeyConstraint(
        ["tenant_id", "invoice_id"],
        ["invoices.tenant_id", "invoices.invoice_id"],
        name="fk_credit_notes_invoice",
    ),
    Index("ix_credit_notes_invoice", "tenant_id", "invoice_id"),
    Index("ix_credit_notes_issued", "tenant_id", "issued_at"),
)

credit_note_numbers = Table(
    "credit_note_numbers",
    metadata,
    Column("tenant_id", Text, ForeignKey("tenants.tenant_id"), primary_key=True),
    Column("last_number", BigInteger, nullable=False),
)

refunds = Table(
    "refunds",
    metadata,
    Column("tenant_id", Text, primary_key=True),
    Column("credit_note_id", Text, primary_key=True),
    Column("idempotency_key", Text, nullable=False),
    Column("invoice_id", Text, nullable=False),
    Column("destination", Text, nullable=False),
    Column("amount", Numeric, nullable=False),
    Column("currency", Text, nullable=False),
    Column("attempts", Integer, nullable=False, server_default="1"),
    Column("status", Text, nullable=False),
    Column("failure_code", Text),
    Column("failure_message", Text),
    Column("gateway_reference", Text),
    Column("pool_id", Text),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("settled_at", DateTime(timezone=True)),
    ForeignKeyConstraint(
        ["tenant_id", "credit_note_id"],
        ["credit_notes.tenant_id", "credit_notes.credit_note_id"],
        name="fk_refunds_credit_note",
    ),
)

simulated_refunds = Table(
    "simulated_refunds",
    metadata,
    Column("idempotency_key", Text, primary_key=True),
    Column("charge_id", Text, nullable=False),
    Column("reference", Text, nullable=False),
    Column("amount", Numeric, nullable=False),
    Column("currency", Text, nullable=False),
    Column("outcome", Text, nullable=False),
    Column("failure_code", Text),
    Column("refund_id", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("ix_simulated_refunds_charge_id", "charge_id"),
)

payment_retries = Table(
    "payment_retries",
    metadata,
    Column("tenant_id", Text, primary_key=True),
    Column("request_id", Text, primary_key=True),
    Column("invoice_id", Text, nullable=False),
    Column("workflow_id", Text, nullable=False),
    Column("actor", Text, nullable=False),
    Column("requested_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    ForeignKeyConstraint(
        ["tenant_id", "invoice_id"],
        ["invoices.tenant_id", "invoices.invoice_id"],
        name="fk_payment_retries_invoice",
    ),
)

# -- lifecycle: notifications and auto-recharge (migration 0005) --

webhook_endpoints = Table(
    "webhook_endpoints",
    metadata,
    Column("endpoint_id", Text, nullable=False),
    Column("tenant_id", Text, ForeignKey("tenants.tenant_id"), nullable=False),
    Column("url", Text, nullable=False),
    Column("topics", ARRAY(Text)),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("disabled_at", DateTime(timezone=True)),
    # The signing secret sealed by `rating_service.core.encryption` (migration 0007).
    Column("secret_ciphertext", LargeBinary, nullable=False),
    Column("secret_key_id", Text, nullable=False),
    PrimaryKeyConstraint("tenant_id", "endpoint_id", name="pk_webhook_endpoints"),
    Index("ix_webhook_endpoints_tenant", "tenant_id"),
)

webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("delivery_id", BigInteger, Identity(always=True), nullable=False),
    Column("tenant_id", Text, nullable=False),
    Column("endpoint_id", Text, nullable=False),
    Column("event_id", Text, nullable=False),
    Column("topic", Text, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("status_code", Integer),
    Column("error", Text),
    Column("succeeded", Boolean, nullable=False),
    Column("at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("tenant_id", "delivery_id", name="pk_webhook_deliveries"),
    ForeignKeyConstraint(
        ["tenant_id", "endpoint_id"],
        ["webhook_endpoints.tenant_id", "webhook_endpoints.endpoint_id"],
        name="fk_webhook_deliveries_endpoint",
    ),
    Index("ix_webhook_deliveries_event", "tenant_id", "event_id"),
)

recharges = Table(
    "recharges",
    metadata,
    Column("tenant_id", Text, primary_key=True),
    Column("recharge_id", Text, primary_key=True),
    Column("contract_id", Text, nullable=False),
    Column("amount", Numeric, nullable=False),
    Column("state", Text, nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("pool_id", Text),
    Column("failure_code", Text),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("settled_at", DateTime(timezone=True)),
    _contract_of("recharges"),
    Index("ix_recharges_contract", "contract_id", "created_at"),
)

# -- ops: invoice workflow replays (migration 0006) --

invoice_replays = Table(
    "invoice_replays",
    metadata,
    Column("replay_id", BigInteger, Identity(always=True), nullable=False),
    Column("tenant_id", Text, ForeignKey("tenants.tenant_id"), nullable=False),
    Column("workflow_id", Text, nullable=False),
    Column("contract_id", Text, nullable=False),
    Column("billing_date", Text, nullable=False),
    Column("replayed_run", Text, nullable=False),
    Column("failed_step", Text, nullable=False),
    Column("error", Text, nullable=False),
    Column("mode", Text, nullable=False),
    Column("reset_to", Text),
    Column("new_run", Text),
    Column("actor", Text, nullable=False),
    Column("reason", Text, nullable=False),
    Column("requested_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("outcome", Text, nullable=False),
    Column("detail", Text, nullable=False, server_default=""),
    Column("finished_at", DateTime(timezone=True)),
    PrimaryKeyConstraint("tenant_id", "replay_id", name="pk_invoice_replays"),
    Index("ix_invoice_replays_workflow", "tenant_id", "workflow_id"),
    Index("ix_invoice_replays_requested", "tenant_id", "requested_at"),
)
