"""trigram indexes for the product search

`GET /products?q=` matches SKU and name with ILIKE '%term%', which no b-tree can serve: a rare
or absent term read and sorted every product. pg_trgm's GIN indexes serve it (pg_trgm is a
trusted extension, available on Amazon RDS and in the embedded server).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27 10:45:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    op.create_index(
        "ix_products_sku_trgm",
        "products",
        ["sku"],
        postgresql_using="gin",
        postgresql_ops={"sku": "gin_trgm_ops"},
    )
    op.create_index(
        "ix_products_name_trgm",
        "products",
        ["name"],
        postgresql_using="gin",
        postgresql_ops={"name": "gin_trgm_ops"},
    )


def downgrade() -> None:
    op.drop_index("ix_products_name_trgm", table_name="products")
    op.drop_index("ix_products_sku_trgm", table_name="products")
    # The extension stays: other objects may use it, and dropping it needs more rights.
