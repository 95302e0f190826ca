"""checkout links

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27 07:14:25.324873
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from app.migrations.privileges import grant_app_role

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "checkout_links",
        sa.Column("order_id", sa.Uuid(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("failed_attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("locked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("first_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("issued_by", sa.String(length=255), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["order_id"], ["orders.id"], name=op.f("fk_checkout_links_order_id_orders")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_checkout_links")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_checkout_links_token_hash")),
    )
    op.create_index(
        op.f("ix_checkout_links_order_id"), "checkout_links", ["order_id"], unique=False
    )
    grant_app_role(read_write=["checkout_links"], append_only=[])


def downgrade() -> None:
    op.drop_index(op.f("ix_checkout_links_order_id"), table_name="checkout_links")
    op.drop_table("checkout_links")
