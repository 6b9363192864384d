"""The catalog: products, versioned rate cards, and the catalog revision caches follow.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the catalog tables."""
    op.create_table(
        "products",
        sa.Column("tenant_id", sa.Text(), nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("definition", postgresql.JSONB(), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.tenant_id"], name="fk_products_tenant_id_tenants"
        ),
        sa.PrimaryKeyConstraint("tenant_id", "key", name="pk_products"),
    )
    op.create_table(
        "rate_cards",
        sa.Column("tenant_id", sa.Text(), nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("effective_from", sa.DateTime(timezone=True), nullable=False),
        sa.Column("effective_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("definition", postgresql.JSONB(), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.CheckConstraint("version >= 1", name="ck_rate_cards_version_positive"),
        sa.CheckConstraint(
            "effective_until IS NULL OR effective_until > effective_from",
            name="ck_rate_cards_effective_range",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.tenant_id"], name="fk_rate_cards_tenant_id_tenants"
        ),
        sa.PrimaryKeyConstraint("tenant_id", "key", "version", name="pk_rate_cards"),
    )
    op.create_index(
        "uq_rate_cards_one_open_version",
        "rate_cards",
        ["tenant_id", "key"],
        unique=True,
        postgresql_where=sa.text("effective_until IS NULL"),
    )
    op.create_table(
        "catalog_revisions",
        sa.Column("tenant_id", sa.Text(), nullable=False),
        sa.Column("revision", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.tenant_id"], name="fk_catalog_revisions_tenant_id_tenants"
        ),
        sa.PrimaryKeyConstraint("tenant_id", name="pk_catalog_revisions"),
    )


def downgrade() -> None:
    """Drop the catalog tables."""
    op.drop_table("catalog_revisions")
    op.drop_index("uq_rate_cards_one_open_version", table_name="rate_cards")
    op.drop_table("rate_cards")
    op.drop_table("products")
