from __future__ import annotations

import uuid

from sqlalchemy import CheckConstraint, ForeignKey, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, UUIDPrimaryKey


class LotAllocation(UUIDPrimaryKey, Base):
    """Units of an order item taken from one lot: reserved while the order is pending or paid,
    consumed when it is fulfilled (and kept, so a recall finds who received the lot)."""

    __tablename__ = "lot_allocations"
    __table_args__ = (
        UniqueConstraint("order_item_id", "lot_id"),
        CheckConstraint("quantity > 0", name="quantity_positive"),
    )

    order_item_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("order_items.id", ondelete="CASCADE"), index=True
    )
    lot_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("lots.id"), index=True)
    quantity: Mapped[int]
