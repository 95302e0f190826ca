from __future__ import annotations

import uuid

from sqlalchemy import CheckConstraint, ForeignKey, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, UUIDPrimaryKey


class OrderItem(UUIDPrimaryKey, Base):
    """A product on an order, at the price captured when it was ordered."""

    __tablename__ = "order_items"
    __table_args__ = (
        UniqueConstraint("order_id", "product_id"),
        CheckConstraint("quantity > 0", name="quantity_positive"),
        CheckConstraint("unit_price_cents > 0", name="unit_price_positive"),
    )

    order_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("orders.id", ondelete="CASCADE"))
    product_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("products.id"))
    quantity: Mapped[int]
    unit_price_cents: Mapped[int]
    # The prescriber's directions (sig) for a prescription item; health details, so encrypted
    # like PHI (context: `order_items.dosage_text.<item id>`).
    dosage_text_encrypted: Mapped[str | None] = mapped_column(Text)


def dosage_text_context(order_item_id: uuid.UUID) -> str:
    """The associated data sealing an order item's dosage text (app.phi)."""
    return f"order_items.dosage_text.{order_item_id}"
