from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, Index, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, CreatedAt, UUIDPrimaryKey

# The cancellation codes were defined here before app/models/status.py: still importable (`as`).
from app.models.status import CancellationReason, OrderStatus, one_of


class Order(UUIDPrimaryKey, CreatedAt, Base):
    __tablename__ = "orders"
    __table_args__ = (
        CheckConstraint(one_of("status", OrderStatus), name="status"),
        CheckConstraint("total_cents >= 0", name="total_not_negative"),
        CheckConstraint(one_of("cancellation_code", CancellationReason), name="cancellation_code"),
        Index("ix_orders_status_expires_at", "status", "expires_at"),
        Index("ix_orders_doctor_id_created_at", "doctor_id", "created_at"),
    )

    patient_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("patients.id"), index=True)
    doctor_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id"))
    status: Mapped[str] = mapped_column(String(16), server_default=OrderStatus.PENDING.value)
    total_cents: Mapped[int] = mapped_column(server_default=text("0"))
    currency: Mapped[str] = mapped_column(String(3), server_default="usd")
    # Free text from the doctor may hold health details: encrypted like PHI.
    note_encrypted: Mapped[str | None] = mapped_column(Text)
    expires_at: Mapped[datetime]
    paid_at: Mapped[datetime | None]
    fulfilled_at: Mapped[datetime | None]
    cancelled_at: Mapped[datetime | None]
    # A CancellationReason code; free text about the cancellation may hold health details, so
    # it lives in the encrypted note (never in the audit log).
    cancellation_code: Mapped[str | None] = mapped_column(String(32))
    cancellation_note_encrypted: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime | None]
