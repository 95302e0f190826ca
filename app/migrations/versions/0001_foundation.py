"""catalog, lots, stock ledger, users, audit log

Revision ID: 0001
Revises:
Create Date: 2026-11-27 05:47:46.525575
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from app.migrations.privileges import (
    APPEND_ONLY_TABLES,
    drop_append_only_guards,
    grant_app_role,
    install_append_only_guards,
)

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "audit_log",
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor_subject", sa.String(length=255), nullable=False),
        sa.Column("actor_role", sa.String(length=16), nullable=False),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("entity_type", sa.String(length=64), nullable=False),
        sa.Column("entity_id", sa.String(length=64), nullable=False),
        sa.Column("before", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("after", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("request_id", sa.String(length=64), nullable=True),
        sa.Column("client_address", sa.String(length=64), nullable=True),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("row_hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_audit_log")),
        sa.UniqueConstraint("row_hash", name=op.f("uq_audit_log_row_hash")),
    )
    op.create_index(
        "ix_audit_log_entity_type_entity_id",
        "audit_log",
        ["entity_type", "entity_id"],
        unique=False,
    )
    op.create_table(
        "products",
        sa.Column("sku", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), server_default="", nullable=False),
        sa.Column("price_cents", sa.Integer(), nullable=False),
        sa.Column("currency", sa.String(length=3), server_default="usd", nullable=False),
        sa.Column("par_level", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("reorder_quantity", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column(
            "requires_prescription", sa.Boolean(), server_default=sa.text("false"), nullable=False
        ),
        sa.Column("perishable", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("active", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("par_level >= 0", name=op.f("ck_products_par_level_not_negative")),
        sa.CheckConstraint("price_cents > 0", name=op.f("ck_products_price_positive")),
        sa.CheckConstraint(
            "reorder_quantity >= 0", name=op.f("ck_products_reorder_quantity_not_negative")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_products")),
        sa.UniqueConstraint("sku", name=op.f("uq_products_sku")),
    )
    op.create_table(
        "users",
        sa.Column("email", sa.String(length=320), nullable=True),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("oidc_subject", sa.String(length=255), nullable=True),
        sa.Column("full_name", sa.String(length=200), nullable=True),
        sa.Column("active", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("role IN ('admin', 'doctor')", name=op.f("ck_users_role")),
        sa.CheckConstraint("email = lower(email)", name=op.f("ck_users_email_lowercase")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("email", name=op.f("uq_users_email")),
        sa.UniqueConstraint("oidc_subject", name=op.f("uq_users_oidc_subject")),
    )
    op.create_table(
        "lots",
        sa.Column("product_id", sa.Uuid(), nullable=False),
        sa.Column("lot_number", sa.String(length=64), nullable=False),
        sa.Column("expiration_date", sa.Date(), nullable=True),
        sa.Column("quantity_on_hand", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("quantity_reserved", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("status", sa.String(length=16), server_default="available", nullable=False),
        sa.Column("status_reason", sa.String(length=500), nullable=True),
        sa.Column("status_changed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "status IN ('available', 'quarantined', 'recalled', 'expired')",
            name=op.f("ck_lots_status"),
        ),
        sa.CheckConstraint("quantity_on_hand >= 0", name=op.f("ck_lots_on_hand_not_negative")),
        sa.CheckConstraint(
            "quantity_reserved <= quantity_on_hand", name=op.f("ck_lots_reserved_within_on_hand")
        ),
        sa.CheckConstraint("quantity_reserved >= 0", name=op.f("ck_lots_reserved_not_negative")),
        sa.ForeignKeyConstraint(
            ["product_id"], ["products.id"], name=op.f("fk_lots_product_id_products")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_lots")),
        sa.UniqueConstraint("product_id", "lot_number", name=op.f("uq_lots_product_id_lot_number")),
    )
    op.create_index(
        "ix_lots_product_id_expiration_date",
        "lots",
        ["product_id", "expiration_date"],
        unique=False,
    )
    op.create_table(
        "stock_movements",
        sa.Column("lot_id", sa.Uuid(), nullable=False),
        sa.Column("delta_on_hand", sa.Integer(), nullable=False),
        sa.Column("delta_reserved", sa.Integer(), nullable=False),
        sa.Column("reason", sa.String(length=16), nullable=False),
        sa.Column("reason_code", sa.String(length=32), nullable=True),
        sa.Column("note", sa.String(length=500), nullable=True),
        sa.Column("order_id", sa.Uuid(), nullable=True),
        sa.Column("actor_subject", sa.String(length=255), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.CheckConstraint(
            "reason IN ('receipt', 'reservation', 'release', 'fulfilment', 'adjustment',"
            " 'expiry', 'recall')",
            name=op.f("ck_stock_movements_reason"),
        ),
        sa.CheckConstraint(
            "delta_on_hand <> 0 OR delta_reserved <> 0",
            name=op.f("ck_stock_movements_changes_something"),
        ),
        sa.ForeignKeyConstraint(
            ["lot_id"], ["lots.id"], name=op.f("fk_stock_movements_lot_id_lots")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stock_movements")),
    )
    op.create_index(
        "ix_stock_movements_lot_id_created_at",
        "stock_movements",
        ["lot_id", "created_at"],
        unique=False,
    )
    install_append_only_guards(APPEND_ONLY_TABLES)
    grant_app_role(read_write=["users", "products", "lots"], append_only=APPEND_ONLY_TABLES)


def downgrade() -> None:
    drop_append_only_guards(APPEND_ONLY_TABLES)
    op.drop_index("ix_stock_movements_lot_id_created_at", table_name="stock_movements")
    op.drop_table("stock_movements")
    op.drop_index("ix_lots_product_id_expiration_date", table_name="lots")
    op.drop_table("lots")
    op.drop_table("users")
    op.drop_table("products")
    op.drop_index("ix_audit_log_entity_type_entity_id", table_name="audit_log")
    op.drop_table("audit_log")
