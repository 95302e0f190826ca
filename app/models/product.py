from __future__ import annotations

import uuid

from sqlalchemy import CheckConstraint, ForeignKey, Index, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, CreatedAt, UUIDPrimaryKey


class Product(UUIDPrimaryKey, CreatedAt, Base):
    __tablename__ = "products"
    __table_args__ = (
        CheckConstraint("price_cents > 0", name="price_positive"),
        CheckConstraint("par_level >= 0", name="par_level_not_negative"),
        CheckConstraint("reorder_quantity >= 0", name="reorder_quantity_not_negative"),
        # `?q=` searches SKU and name with ILIKE '%term%': trigram indexes serve it for terms
        # of three characters or more.
        Index(
            "ix_products_sku_trgm",
            "sku",
            postgresql_using="gin",
            postgresql_ops={"sku": "gin_trgm_ops"},
        ),
        Index(
            "ix_products_name_trgm",
            "name",
            postgresql_using="gin",
            postgresql_ops={"name": "gin_trgm_ops"},
        ),
    )

    sku: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, server_default="")
    price_cents: Mapped[int]
    currency: Mapped[str] = mapped_column(String(3), server_default="usd")
    par_level: Mapped[int] = mapped_column(server_default=text("0"))
    reorder_quantity: Mapped[int] = mapped_column(server_default=text("0"))
    requires_prescription: Mapped[bool] = mapped_column(server_default=text("false"))
    perishable: Mapped[bool] = mapped_column(server_default=text("false"))
    active: Mapped[bool] = mapped_column(server_default=text("true"))
    # Codes a pharmacy reads the medication by (optional; formats checked by the API).
    rxnorm_code: Mapped[str | None] = mapped_column(String(8))
    ndc_code: Mapped[str | None] = mapped_column(String(13))
    # The pharmacy that fills this product; null: the default pharmacy.
    pharmacy_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("pharmacies.id", ondelete="SET NULL")
    )
