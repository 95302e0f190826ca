"""patients, orders, lot allocations

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27 05:58:56.944909
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from app.migrations.privileges import grant_app_role

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "patients",
        sa.Column("doctor_id", sa.Uuid(), nullable=True),
        sa.Column("name_encrypted", sa.Text(), nullable=False),
        sa.Column("email_encrypted", sa.Text(), nullable=False),
        sa.Column("phone_encrypted", sa.Text(), nullable=False),
        sa.Column("date_of_birth_encrypted", sa.Text(), nullable=False),
        sa.Column("email_hash", sa.String(length=64), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["doctor_id"], ["users.id"], name=op.f("fk_patients_doctor_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_patients")),
        sa.UniqueConstraint(
            "doctor_id", "email_hash", name=op.f("uq_patients_doctor_id_email_hash")
        ),
    )
    op.create_index(op.f("ix_patients_doctor_id"), "patients", ["doctor_id"], unique=False)
    op.create_index(op.f("ix_patients_email_hash"), "patients", ["email_hash"], unique=False)
    op.create_table(
        "orders",
        sa.Column("patient_id", sa.Uuid(), nullable=False),
        sa.Column("doctor_id", sa.Uuid(), nullable=True),
        sa.Column("status", sa.String(length=16), server_default="pending", nullable=False),
        sa.Column("total_cents", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("currency", sa.String(length=3), server_default="usd", nullable=False),
        sa.Column("note_encrypted", sa.Text(), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("paid_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("fulfilled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("cancelled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("cancellation_reason", sa.String(length=200), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "status IN ('pending', 'paid', 'fulfilled', 'cancelled')", name=op.f("ck_orders_status")
        ),
        sa.CheckConstraint("total_cents >= 0", name=op.f("ck_orders_total_not_negative")),
        sa.ForeignKeyConstraint(
            ["doctor_id"], ["users.id"], name=op.f("fk_orders_doctor_id_users")
        ),
        sa.ForeignKeyConstraint(
            ["patient_id"], ["patients.id"], name=op.f("fk_orders_patient_id_patients")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_orders")),
    )
    op.create_index(
        "ix_orders_doctor_id_created_at", "orders", ["doctor_id", "created_at"], unique=False
    )
    op.create_index(op.f("ix_orders_patient_id"), "orders", ["patient_id"], unique=False)
    op.create_index("ix_orders_status_expires_at", "orders", ["status", "expires_at"], unique=False)
    op.create_table(
        "order_items",
        sa.Column("order_id", sa.Uuid(), nullable=False),
        sa.Column("product_id", sa.Uuid(), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("unit_price_cents", sa.Integer(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.CheckConstraint("quantity > 0", name=op.f("ck_order_items_quantity_positive")),
        sa.CheckConstraint("unit_price_cents > 0", name=op.f("ck_order_items_unit_price_positive")),
        sa.ForeignKeyConstraint(
            ["order_id"],
            ["orders.id"],
            name=op.f("fk_order_items_order_id_orders"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["product_id"], ["products.id"], name=op.f("fk_order_items_product_id_products")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_order_items")),
        sa.UniqueConstraint(
            "order_id", "product_id", name=op.f("uq_order_items_order_id_product_id")
        ),
    )
    op.create_table(
        "lot_allocations",
        sa.Column("order_item_id", sa.Uuid(), nullable=False),
        sa.Column("lot_id", sa.Uuid(), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.CheckConstraint("quantity > 0", name=op.f("ck_lot_allocations_quantity_positive")),
        sa.ForeignKeyConstraint(
            ["lot_id"], ["lots.id"], name=op.f("fk_lot_allocations_lot_id_lots")
        ),
        sa.ForeignKeyConstraint(
            ["order_item_id"],
            ["order_items.id"],
            name=op.f("fk_lot_allocations_order_item_id_order_items"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_lot_allocations")),
        sa.UniqueConstraint(
            "order_item_id", "lot_id", name=op.f("uq_lot_allocations_order_item_id_lot_id")
        ),
    )
    op.create_index(op.f("ix_lot_allocations_lot_id"), "lot_allocations", ["lot_id"], unique=False)
    op.create_index(
        op.f("ix_lot_allocations_order_item_id"), "lot_allocations", ["order_item_id"], unique=False
    )
    op.add_column(
        "stock_movements",
        sa.Column("seq", sa.BigInteger(), sa.Identity(always=False), nullable=False),
    )
    op.create_index(
        op.f("ix_stock_movements_order_id"), "stock_movements", ["order_id"], unique=False
    )
    op.create_unique_constraint(op.f("uq_stock_movements_seq"), "stock_movements", ["seq"])
    op.create_foreign_key(
        op.f("fk_stock_movements_order_id_orders"),
        "stock_movements",
        "orders",
        ["order_id"],
        ["id"],
    )
    grant_app_role(
        read_write=["patients", "orders", "order_items", "lot_allocations"], append_only=[]
    )


def downgrade() -> None:
    op.drop_constraint(
        op.f("fk_stock_movements_order_id_orders"), "stock_movements", type_="foreignkey"
    )
    op.drop_constraint(op.f("uq_stock_movements_seq"), "stock_movements", type_="unique")
    op.drop_index(op.f("ix_stock_movements_order_id"), table_name="stock_movements")
    op.drop_column("stock_movements", "seq")
    op.drop_index(op.f("ix_lot_allocations_order_item_id"), table_name="lot_allocations")
    op.drop_index(op.f("ix_lot_allocations_lot_id"), table_name="lot_allocations")
    op.drop_table("lot_allocations")
    op.drop_table("order_items")
    op.drop_index("ix_orders_status_expires_at", table_name="orders")
    op.drop_index(op.f("ix_orders_patient_id"), table_name="orders")
    op.drop_index("ix_orders_doctor_id_created_at", table_name="orders")
    op.drop_table("orders")
    op.drop_index(op.f("ix_patients_email_hash"), table_name="patients")
    op.drop_index(op.f("ix_patients_doctor_id"), table_name="patients")
    op.drop_table("patients")
