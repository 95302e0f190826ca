from __future__ import annotations

import uuid
from datetime import date, datetime

from sqlalchemy import CheckConstraint, ForeignKey, Index, String, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, CreatedAt, UUIDPrimaryKey
from app.models.status import LotStatus, one_of


class Lot(UUIDPrimaryKey, CreatedAt, Base):
    """A received batch of one product. Its counters are the running sum of its stock movements."""

    __tablename__ = "lots"
    __table_args__ = (
        UniqueConstraint("product_id", "lot_number"),
        CheckConstraint("quantity_on_hand >= 0", name="on_hand_not_negative"),
        CheckConstraint("quantity_reserved >= 0", name="reserved_not_negative"),
        CheckConstraint("quantity_reserved <= quantity_on_hand", name="reserved_within_on_hand"),
        CheckConstraint(one_of("status", LotStatus), name="status"),
        Index("ix_lots_product_id_expiration_date", "product_id", "expiration_date"),
    )

    product_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("products.id"))
    lot_number: Mapped[str] = mapped_column(String(64))
    expiration_date: Mapped[date | None]
    quantity_on_hand: Mapped[int] = mapped_column(server_default=text("0"))
    quantity_reserved: Mapped[int] = mapped_column(server_default=text("0"))
    status: Mapped[str] = mapped_column(String(16), server_default=LotStatus.AVAILABLE.value)
    status_reason: Mapped[str | None] = mapped_column(String(500))
    status_changed_at: Mapped[datetime | None]
