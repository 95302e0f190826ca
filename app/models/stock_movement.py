from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Identity, Index, String, func
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, UUIDPrimaryKey
from app.models.status import StockMovementReason, one_of


class StockMovement(UUIDPrimaryKey, Base):
    """Append-only ledger row: one change to a lot's on-hand and/or reserved quantity."""

    __tablename__ = "stock_movements"
    __table_args__ = (
        CheckConstraint(one_of("reason", StockMovementReason), name="reason"),
        CheckConstraint("delta_on_hand <> 0 OR delta_reserved <> 0", name="changes_something"),
        Index("ix_stock_movements_lot_id_created_at", "lot_id", "created_at"),
    )

    lot_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("lots.id"))
    delta_on_hand: Mapped[int]
    delta_reserved: Mapped[int]
    reason: Mapped[str] = mapped_column(String(16))
    # For adjustments: an AdjustmentReason.
    reason_code: Mapped[str | None] = mapped_column(String(32))
    note: Mapped[str | None] = mapped_column(String(500))
    order_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("orders.id"), index=True)
    actor_subject: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    # Insertion order (rows of one transaction share created_at).
    seq: Mapped[int] = mapped_column(BigInteger, Identity(), unique=True)
