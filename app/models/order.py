from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, Index, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, CreatedAt, UUIDPrimaryKey

ORDER_STATUSES = ("pending", "paid", "fulfilled", "cancelled")


class Order(UUIDPrimaryKey, CreatedAt, Base):
    __tablename__ = "orders"
    __table_args__ = (
        CheckConstraint("status IN ('pending', 'paid', 'fulfilled', 'cancelled')", name="status"),
        CheckConstraint("total_cents >= 0", name="total_not_negative"),
        Index("ix_orders_status_expires_at", "status", "expires_at"),
        Index("ix_orders_doctor_id_created_at", "doctor_id", "created_at"),
    )

    patient_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("patients.id"), index=True)
    doctor_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id"))
    status: Mapped[str] = mapped_column(String(16), server_default="pending")
    total_cents: Mapped[int] = mapped_column(server_default=text("0"))
    currency: Mapped[str] = mapped_column(String(3), server_default="usd")
    # Free text from the doctor may hold health details: encrypted like PHI.
    note_encrypted: Mapped[str | None] = mapped_column(Text)
    expires_at: Mapped[datetime]
    paid_at: Mapped[datetime | None]
    fulfilled_at: Mapped[datetime | None]
    cancelled_at: Mapped[datetime | None]
    cancellation_reason: Mapped[str | None] = mapped_column(String(200))
    updated_at: Mapped[datetime | None]
